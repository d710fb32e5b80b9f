"""Blueprints and skills: composition of a chat request (template, variables, skills, parameters),
railguards on its input and output, and overrides that answer without a model."""
