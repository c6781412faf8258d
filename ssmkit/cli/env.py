"""`ssmkit env`: versions, devices, and which backend every op will use (fallbacks shown, never silent)."""

from __future__ import annotations

import argparse
import importlib.metadata as md
import platform

import torch

from .. import __version__
from ..ops._backend import backend_report, triton_status


def _version(package: str) -> str:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return "not installed"


def register(sub) -> None:
    p = sub.add_parser("env", help="print versions, devices and the backend each op uses")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print(f"ssmkit       {__version__}")
    print(f"python       {platform.python_version()} ({platform.machine()})")
    for pkg in ("torch", "triton", "numpy", "safetensors", "transformers"):
        print(f"{pkg:<12} {_version(pkg)}")
    cuda = torch.cuda.is_available()
    print(f"cuda         {'yes: ' + torch.cuda.get_device_name() if cuda else 'no'}")
    print(f"cpu threads  {torch.get_num_threads()}")
    usable, reason = triton_status()
    print(f"triton path  {'usable' if usable else 'not usable'}: {reason}")
    print("\nbackend='auto' picks:")
    rows = backend_report()
    width = max(len(r["op"]) for r in rows)
    for r in rows:
        print(f"  {r['op']:<{width}}  {r['device']:<4}  {r['backend']:<9}  {r['why']}")
    return 0
