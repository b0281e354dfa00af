"""Builds the C core (epolloop._core). Where it cannot be built — no compiler, no Python
headers — the install still succeeds and epolloop runs on its pure-Python core; the build
says so once."""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CORE_SOURCES = [
    os.path.join("epolloop", "_core", name)
    for name in ("module.c", "handles.c", "reactor.c", "stream.c", "sockops.c", "registry.c")
]


class OptionalBuildExt(build_ext):
    """build_ext that falls back to the pure-Python core instead of failing the install."""

    # Any failure (no compiler, no Python headers, a compiler error) means the fallback.

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            self._fall_back(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._fall_back(exc)

    def _fall_back(self, exc: Exception) -> None:
        print(
            f"epolloop: the C core could not be built ({exc}); "
            "installing the pure-Python core only",
            file=sys.stderr,
        )


setup(
    ext_modules=[
        Extension(
            "epolloop._core",
            sources=CORE_SOURCES,
            depends=[os.path.join("epolloop", "_core", "core.h")],
            extra_compile_args=["-std=gnu11", "-Wall", "-Wextra"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
