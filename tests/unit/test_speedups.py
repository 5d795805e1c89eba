"""datapath/userspace/speedups.py: the C ones' complement sum and the pure-Python fallback give
the same numbers, both agree with RFC 1071 summed word by word; the C TCP/IPv4 parse accepts
exactly the common packets frames.py's parsers accept, with the same fields, and nothing they
refuse (fuzzed); the fallback is what a process gets when the extension is missing (logged
once), and a build without a compiler still installs."""

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

from controlplane.datapath.userspace import speedups
from controlplane.datapath.userspace.frames import (
    PROTO_TCP,
    PROTO_UDP,
    FrameError,
    IPv4,
    Tcp,
    Udp,
    internet_checksum,
    ip_bytes,
    tcp_ipv4_frame_python,
)

ROOT = Path(__file__).resolve().parents[2]

try:
    from controlplane.datapath.userspace._speedups import tcp_in_ipv4 as tcp_in_ipv4_c
    from controlplane.datapath.userspace._speedups import tcp_ipv4_frame as tcp_ipv4_frame_c
    from controlplane.datapath.userspace._speedups import word_sum as word_sum_c
except ImportError:
    word_sum_c = tcp_in_ipv4_c = tcp_ipv4_frame_c = None

needs_c = pytest.mark.skipif(
    word_sum_c is None, reason="the C extension is not built here (no compiler when installed)"
)
IMPLEMENTATIONS: list[Callable[[bytes], int]] = [speedups.word_sum_python]
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
        assert word_sum_c(data) == speedups.word_sum_python(data), data.hex()


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


A, B = ip_bytes("10.0.1.2"), ip_bytes("10.0.1.3")


def tcp_packet(rng: random.Random) -> bytes:
    """An IPv4 packet (no options) carrying a TCP segment with random fields and payload."""
    options = rng.randbytes(rng.choice([0, 0, 4, 12, 40]))
    payload = rng.randbytes(rng.choice([0, 1, 2, 3, rng.randrange(1400), 1398, 1410]))
    segment = Tcp(
        rng.randrange(1 << 16),
        rng.randrange(1 << 16),
        rng.randrange(1 << 32),
        rng.randrange(1 << 32),
        rng.randrange(256),
        rng.randrange(1 << 16),
        payload,
        options,
    )
    return IPv4(A, B, PROTO_TCP, segment.pack(A, B), ttl=rng.randrange(1, 256)).pack()


def parsed_by_python(packet: bytes) -> tuple[bytes, bytes, Tcp] | None:
    """What frames.py makes of a packet the C parse is for (IPv4 without options, TCP), None
    where it refuses it."""
    try:
        ip = IPv4.parse(packet)
        if packet[0] != 0x45 or ip.protocol != PROTO_TCP:
            return None  # the general path's business: the C parse leaves it alone
        return ip.src, ip.dst, Tcp.parse(ip.payload, ip.src, ip.dst)
    except FrameError:
        return None


@needs_c
def test_c_tcp_parse_gives_what_frames_gives() -> None:
    assert tcp_in_ipv4_c is not None
    rng = random.Random(16)
    for _ in range(3000):
        packet = tcp_packet(rng)
        header = rng.randbytes(14)
        expected = parsed_by_python(packet)
        assert expected is not None
        assert tcp_in_ipv4_c(header + packet, 14, Tcp) == expected
        assert tcp_in_ipv4_c(packet, 0, Tcp) == expected
        assert tcp_in_ipv4_c(bytearray(packet + rng.randbytes(9)), 0, Tcp) == expected  # padded


@needs_c
def test_c_tcp_parse_refuses_what_frames_refuses_fuzzed() -> None:
    """Damaged packets: a byte changed, cut short, a length or offset field rewritten, the
    checksums fixed up or not. The C parse accepts exactly those frames.py accepts (among
    TCP packets without IP options) and gives the same fields."""
    assert tcp_in_ipv4_c is not None
    rng = random.Random(17)
    accepted = refused = 0
    for _ in range(20_000):
        raw = bytearray(tcp_packet(rng))
        how = rng.randrange(6)
        if how == 0:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        elif how == 1:
            del raw[rng.randrange(len(raw) + 1) :]
        elif how == 2:  # total length
            raw[2:4] = rng.choice([0, 19, 20, 39, 40, len(raw) - 1, len(raw) + 1]).to_bytes(2)
        elif how == 3:  # TCP data offset
            raw[32] = rng.randrange(16) << 4 | (raw[32] & 0x0F)
        elif how == 4:  # flags and fragment offset, version and IHL, protocol
            index = rng.choice([0, 6, 7, 9])
            raw[index] = rng.randrange(256)
        if how in (2, 4) and rng.random() < 0.7 and len(raw) >= 20:  # keep the header valid
            raw[10:12] = b"\x00\x00"
            raw[10:12] = internet_checksum(bytes(raw[:20])).to_bytes(2)
        packet = bytes(raw)
        expected = parsed_by_python(packet)
        assert tcp_in_ipv4_c(packet, 0, Tcp) == expected, (how, packet[:40].hex())
        accepted += expected is not None
        refused += expected is None
    assert accepted > 1000 and refused > 1000, (accepted, refused)


@needs_c
def test_c_tcp_parse_leaves_other_packets_and_bad_offsets_alone() -> None:
    assert tcp_in_ipv4_c is not None
    udp = IPv4(A, B, PROTO_UDP, Udp(1, 2, b"data").pack(A, B)).pack()
    assert parsed_by_python(udp) is None and IPv4.parse(udp).protocol == PROTO_UDP
    assert tcp_in_ipv4_c(udp, 0, Tcp) is None
    packet = tcp_packet(random.Random(18))
    for offset in (-1, len(packet) + 1, 1 << 40):
        assert tcp_in_ipv4_c(packet, offset, Tcp) is None
    with pytest.raises(TypeError):
        tcp_in_ipv4_c("text", 0, Tcp)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tcp_in_ipv4_c(packet, "0", Tcp)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="takes 3 arguments"):
        tcp_in_ipv4_c(packet, 0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):  # what the segment type refuses comes back as it was
        tcp_in_ipv4_c(packet, 0, int)


@needs_c
def test_c_tcp_frame_is_the_python_one_byte_for_byte() -> None:
    assert tcp_ipv4_frame_c is not None
    rng = random.Random(19)
    for _ in range(5000):
        fields = (
            rng.randbytes(6),
            rng.randbytes(6),
            rng.randbytes(4),
            rng.randbytes(4),
            rng.choice([0, 0xFFFF, rng.randrange(1 << 16)]),
            rng.randrange(1 << 16),
            rng.randrange(1 << 16),
            rng.choice([0, (1 << 32) - 1, rng.randrange(1 << 32)]),
            rng.choice([0, (1 << 32) - 1, rng.randrange(1 << 32)]),
            rng.randrange(256),
            rng.randrange(1 << 16),
        )
        payload = rng.choice(
            [b"", rng.randbytes(rng.randrange(1, 1411)), bytes(7), b"\xff" * rng.randrange(99)]
        )
        frame = tcp_ipv4_frame_c(*fields, payload)
        assert frame == tcp_ipv4_frame_python(*fields, payload), fields
        assert tcp_ipv4_frame_c(*fields, bytearray(payload)) == frame
        # ... and it parses back to its fields, both checksums right.
        src, dst, segment = parsed_by_python(frame[14:]) or (b"", b"", None)
        assert (src, dst) == fields[2:4] and segment is not None
        assert (segment.seq, segment.ack, segment.payload) == (fields[7], fields[8], payload)


@needs_c
def test_c_tcp_frame_refuses_what_does_not_fit() -> None:
    assert tcp_ipv4_frame_c is not None
    good = [bytes(6), bytes(6), bytes(4), bytes(4), 1, 2, 3, 4, 5, 0x10, 6]
    for index, bad, what in [
        (0, bytes(5), "MAC addresses take 6 bytes"),
        (2, bytes(16), "IPv4 addresses 4"),
        (4, 1 << 16, "ident 65536 does not fit"),
        (7, 1 << 32, "seq 4294967296 does not fit"),
        (8, -1, "ack -1 does not fit"),
        (9, 256, "flags 256 does not fit"),
        (10, 1 << 16, "window 65536 does not fit"),
    ]:
        args = [*good[:index], bad, *good[index + 1 :]]
        with pytest.raises(ValueError, match=what):
            tcp_ipv4_frame_c(*args, b"")
    with pytest.raises(ValueError, match="exceeds 65535"):
        tcp_ipv4_frame_c(*good, bytes(65_535 - 40 + 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        tcp_ipv4_frame_c(*good)  # type: ignore[call-arg]


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
                if name.endswith("._speedups"):
                    raise ImportError("blocked by the test")
        sys.meta_path.insert(0, NoExtension())
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        from controlplane.datapath.userspace import speedups
        from controlplane.datapath.userspace.frames import internet_checksum
        assert speedups.word_sum is speedups.word_sum_python
        assert speedups.tcp_in_ipv4 is None and speedups.tcp_ipv4_frame is None
        from controlplane.datapath.userspace import frames
        assert frames.tcp_ipv4_frame is frames.tcp_ipv4_frame_python
        speedups.report_implementation()
        speedups.report_implementation()
        print("checksum", internet_checksum(bytes.fromhex("0001f203f4f5f6f7")))
        """
    )
    assert f"checksum {~0xDDF2 & 0xFFFF}" in out
    assert out.count("event=datapath_speedups") == 1
    assert "WARNING event=datapath_speedups impl=python" in out
    assert "the C extension is not built" in out


def test_the_environment_forces_the_python_sum() -> None:
    out = run_python(
        """
        from controlplane.datapath.userspace import speedups
        pure = speedups.word_sum is speedups.word_sum_python and speedups.tcp_in_ipv4 is None
        print(pure, speedups.IMPLEMENTATION)
        """,
        env={speedups.DISABLE_ENV: "off"},
    )
    assert out.startswith("True python (SWARMLAB_SPEEDUPS=off)")


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
        env={**os.environ, speedups.DISABLE_ENV: "off"},
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout


def test_report_names_the_c_sum_when_built() -> None:
    if speedups.IMPLEMENTATION != "c":
        pytest.skip(f"the C extension is not in use here: {speedups.IMPLEMENTATION}")
    out = run_python(
        """
        import logging
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        from controlplane.datapath.userspace import speedups
        speedups.report_implementation()
        """
    )
    assert "INFO event=datapath_speedups impl=c" in out


def test_a_build_without_a_compiler_succeeds_without_the_extension(tmp_path: Path) -> None:
    """`optional=True`: setup.py build_ext with a compiler that does not exist warns and goes
    on, so `make .venv/.installed` works on a machine without gcc."""
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    source = tmp_path / "controlplane/datapath/userspace"
    source.mkdir(parents=True)
    shutil.copy(ROOT / "controlplane/datapath/userspace/_speedups.c", source)
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
    assert not list(source.glob("_speedups*.so"))


def test_report_is_quiet_after_the_first_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=speedups.log.name)
    speedups.report_implementation()
    caplog.clear()
    speedups.report_implementation()
    assert not caplog.records
