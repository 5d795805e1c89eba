"""The optional C accelerator of the userspace data path (everything else is in
pyproject.toml). `optional=True`: where it cannot be built (no compiler, no Python headers)
the install goes on without it and `datapath/userspace/speedups.py` uses pure Python."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "controlplane.datapath.userspace._speedups",
            sources=["controlplane/datapath/userspace/_speedups.c"],
            extra_compile_args=["-O2"],
            optional=True,
        )
    ]
)
