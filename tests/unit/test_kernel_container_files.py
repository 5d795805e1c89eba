"""The /etc files a kernel-mode container keeps when a tmpfs covers its /run: those the host
links into /run (systemd-resolved's resolv.conf) are copied to the same place in the tmpfs's
content, the container's own version where it has one."""

from __future__ import annotations

from pathlib import Path

from controlplane.datapath.kernel.containers import keep_etc_links


def test_etc_files_linked_into_run_are_copied_there(tmp_path: Path) -> None:
    etc, run, own_etc, run_files = (tmp_path / d for d in ("etc", "run", "own", "files"))
    stub = run / "systemd" / "resolve" / "stub-resolv.conf"
    stub.parent.mkdir(parents=True)
    stub.write_text("nameserver 127.0.0.53\n")
    (run / "hostname").write_text("host\n")
    etc.mkdir()
    (etc / "resolv.conf").symlink_to(stub)
    (etc / "hostname").symlink_to(run / "hostname")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n")  # a file of its own: nothing to do
    own_etc.mkdir()
    (own_etc / "resolv.conf").write_text("nameserver 127.0.0.11\n")

    keep_etc_links(own_etc, run_files, etc=etc, run=run)

    copied = run_files / "systemd" / "resolve" / "stub-resolv.conf"
    assert copied.read_text() == "nameserver 127.0.0.11\n"  # the container's, not the host's
    assert (run_files / "hostname").read_text() == "host\n"  # none of its own: the host's
    assert sorted(p.name for p in run_files.rglob("*") if p.is_file()) == [
        "hostname",
        "stub-resolv.conf",
    ]


def test_nothing_is_copied_when_no_etc_file_links_into_run(tmp_path: Path) -> None:
    etc, run, run_files = tmp_path / "etc", tmp_path / "run", tmp_path / "files"
    etc.mkdir()
    run.mkdir()
    run_files.mkdir()
    for name in ("resolv.conf", "hosts", "hostname"):
        (etc / name).write_text("x\n")
    keep_etc_links(tmp_path / "own", run_files, etc=etc, run=run)
    assert list(run_files.iterdir()) == []
