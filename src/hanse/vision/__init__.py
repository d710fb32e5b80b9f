"""Image inputs: the safe fetcher and the re-encoding of every image before a provider sees it.

addresses.py  which hosts and addresses may be fetched (pure functions)
fetcher.py    SafeFetcher: one lookup, every address checked, connection pinned; redirects, caps
images.py     decode with Pillow, check, drop metadata, re-encode (JPEG or PNG), downscale
content.py    ImageInputs.prepare: the pipeline step over a request's image parts
"""
