"""datapath/userspace/checksum.py: the C ones' complement sum and the pure-Python fallback give
the same numbers, both agree with RFC 1071 summed word by word, the fallback is what a process
gets when the extension is missing (logged once), and a build without a compiler still
installs."""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from controlplane.datapath.userspace import checksum

ROOT = Path(__file__).resolve().parents[2]

try:
    from controlplane.datapath.userspace._checksum import word_sum as word_sum_c
except ImportError:
    word_sum_c = None

needs_c = pytest.mark.skipif(
    word_sum_c is None, reason="the C extension is not built here (no compiler when installed)"
)
IMPLEMENTATIONS: list[Callable[[bytes], int]] = [checksum.word_sum_python]
if word_sum_c is not None:
    IMPLEMENTATIONS.append(word_sum_c)


def sum_word_by_word(data: bytes) -> int:
    """RFC 1071 as written: add the big-endian 16-bit words, carries folded back in."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


@pytest.mark.parametrize("word_sum", IMPLEMENTATIONS, ids=lambda f: f.__module__)
def test_known_sums(word_sum: Callable[[bytes], int]) -> None:
    assert word_sum(bytes.fromhex("0001f203f4f5f6f7")) == 0xDDF2  # RFC 1071 section 3
    assert word_sum(b"") == 0
    assert word_sum(bytes(9)) == 0  # all zero: the only way to get 0
    assert word_sum(b"\xff\xff") == 0xFFFF  # never the other zero
    assert word_sum(b"\xff" * 1448) == 0xFFFF
    assert word_sum(b"\xff" * 1449) == 0xFF00  # 0xFFFF words vanish, the odd byte stays
    assert word_sum(b"\xff") == 0xFF00  # an odd byte is the high half of a word
    assert word_sum(b"\x80\x00\x80\x00") == 0x0001  # the carry comes back in
    assert word_sum(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09") == 0x1914  # a byte past 64 bits


@pytest.mark.parametrize("word_sum", IMPLEMENTATIONS, ids=lambda f: f.__module__)
def test_random_data_every_length_and_fill(word_sum: Callable[[bytes], int]) -> None:
    rng = random.Random(11)
    sizes = [*range(0, 80), 1447, 1448, 1449, 9001, 65_507, *rng.sample(range(80, 4000), 200)]
    for size in sizes:
        for data in (rng.randbytes(size), bytes(size), b"\xff" * size):
            assert word_sum(data) == sum_word_by_word(data), size


@needs_c
def test_c_and_python_agree_on_random_data() -> None:
    assert word_sum_c is not None
    rng = random.Random(12)
    for _ in range(20_000):
        size = rng.randrange(0, 3000)
        data = rng.choice([rng.randbytes(size), bytes(size), b"\xff" * size])
        # Runs of 0xFF and 0x00 mixed: where carries pile up.
        if rng.random() < 0.3:
            data = bytes(rng.choice((0, 0xFF, rng.randrange(256))) for _ in range(size))
        assert word_sum_c(data) == checksum.word_sum_python(data), data.hex()


@pytest.mark.parametrize("word_sum", IMPLEMENTATIONS, ids=lambda f: f.__module__)
def test_partial_sums_at_even_offsets_add_up(word_sum: Callable[[bytes], int]) -> None:
    rng = random.Random(13)
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 1600))
        cut = rng.randrange(0, len(data) + 1) & ~1
        total = word_sum(data[:cut]) + word_sum(data[cut:])
        assert (total - word_sum(data)) % 0xFFFF == 0, (len(data), cut)


@pytest.mark.parametrize("word_sum", IMPLEMENTATIONS, ids=lambda f: f.__module__)
def test_bytes_like_inputs(word_sum: Callable[[bytes], int]) -> None:
    data = random.Random(14).randbytes(1001)
    assert word_sum(bytearray(data)) == word_sum(memoryview(data)) == word_sum(data)  # type: ignore[arg-type]
    assert word_sum(memoryview(data)[1:]) == sum_word_by_word(data[1:])  # type: ignore[arg-type]


@needs_c
def test_c_refuses_what_is_not_bytes() -> None:
    assert word_sum_c is not None
    with pytest.raises(TypeError):
        word_sum_c("text")  # type: ignore[arg-type]


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_without_the_extension_the_python_sum_is_used_and_logged_once() -> None:
    # The import of the extension fails, as where it was never built.
    out = run_python(
        """
        import logging, sys
        class NoExtension:
            def find_spec(self, name, path=None, target=None):
                if name.endswith("._checksum"):
                    raise ImportError("blocked by the test")
        sys.meta_path.insert(0, NoExtension())
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        from controlplane.datapath.userspace import checksum
        from controlplane.datapath.userspace.frames import internet_checksum
        assert checksum.word_sum is checksum.word_sum_python
        checksum.report_implementation()
        checksum.report_implementation()
        print("checksum", internet_checksum(bytes.fromhex("0001f203f4f5f6f7")))
        """
    )
    assert f"checksum {~0xDDF2 & 0xFFFF}" in out
    assert out.count("event=checksum_implementation") == 1
    assert "WARNING event=checksum_implementation impl=python" in out
    assert "the C extension is not built" in out


def test_the_environment_forces_the_python_sum() -> None:
    out = run_python(
        """
        from controlplane.datapath.userspace import checksum
        print(checksum.word_sum is checksum.word_sum_python, checksum.IMPLEMENTATION)
        """,
        env={checksum.FORCE_PYTHON_ENV: "python"},
    )
    assert out.startswith("True python (SWARMLAB_CHECKSUM=python)")


def test_frames_and_stack_tests_pass_with_the_python_sum() -> None:
    """The wire formats and the TCP stack, run on the fallback (as where nothing compiles)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:xdist",
            "tests/unit/test_userspace_frames.py",
            "tests/unit/test_userspace_stack.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
        env={**os.environ, checksum.FORCE_PYTHON_ENV: "python"},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


def test_report_names_the_c_sum_when_built() -> None:
    if checksum.IMPLEMENTATION != "c":
        pytest.skip(f"the C extension is not in use here: {checksum.IMPLEMENTATION}")
    out = run_python(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        from controlplane.datapath.userspace import checksum
        checksum.report_implementation()
        """
    )
    assert "INFO event=checksum_implementation impl=c" in out


def test_a_build_without_a_compiler_succeeds_without_the_extension(tmp_path: Path) -> None:
    """`optional=True`: setup.py build_ext with a compiler that does not exist warns and goes
    on, so `make .venv/.installed` works on a machine without gcc."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    source = tmp_path / "controlplane/datapath/userspace"
    source.mkdir(parents=True)
    shutil.copy(ROOT / "controlplane/datapath/userspace/_checksum.c", source)
    done = subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CC": str(tmp_path / "no-such-compiler")},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "no-such-compiler" in done.stdout + done.stderr
    assert not list(source.glob("_checksum*.so"))


def test_report_is_quiet_after_the_first_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=checksum.log.name)
    checksum.report_implementation()
    caplog.clear()
    checksum.report_implementation()
    assert not caplog.records
