"""Fixtures of the serving tests."""

from __future__ import annotations

import builtins
import io
import os
import urllib.request

import pytest


@pytest.fixture
def nothing_opened(monkeypatch):
    """Fails the test if anything opens a path or a URL that a request named (``/etc/passwd``, a URL):
    ``open``, ``os.open``, ``urlopen`` and Pillow's ``Image.open`` of a name are recorded. Yields the list."""
    from PIL import Image

    opened: list[str] = []
    suspicious = ("passwd", "http:", "file:", "cover.png")

    def watch(name, real):
        def watched(target, *args, **kwargs):
            text = target if isinstance(target, str) else getattr(target, "full_url", str(target))
            if any(s in str(text) for s in suspicious):
                opened.append(f"{name}({text!r})")
                raise PermissionError(f"the test forbids {name}({text!r})")
            return real(target, *args, **kwargs)

        return watched

    monkeypatch.setattr(builtins, "open", watch("open", builtins.open))
    monkeypatch.setattr(io, "open", watch("io.open", io.open))
    monkeypatch.setattr(os, "open", watch("os.open", os.open))
    monkeypatch.setattr(urllib.request, "urlopen", watch("urlopen", urllib.request.urlopen))
    monkeypatch.setattr(Image, "open", watch("Image.open", Image.open))
    yield opened
    assert opened == [], f"a request made the service open {opened}"
