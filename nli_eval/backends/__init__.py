"""Scoring backends: a backend turns a batch of prompts into per-label scores."""

from .base import Backend, BackendInfo

__all__ = ["Backend", "BackendInfo"]
