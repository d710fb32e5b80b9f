"""The vault: per-account encrypted storage of blueprints and skills (see sealing.py, service.py)."""
