"""Memory available under a control group's limit (containers, Slurm jobs), on fake procfs/cgroup trees."""

from pathlib import Path

from ScribbleSegLib import resources

GIB = 2**30


def _proc(tmp_path: Path, cgroup: str, mountinfo: str, mem_available: int = 20 * GIB) -> str:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "meminfo").write_text(f"MemTotal: {32 * GIB // 1024} kB\nMemAvailable: {mem_available // 1024} kB\n")
    (proc / "self" / "cgroup").write_text(cgroup)
    (proc / "self" / "mountinfo").write_text(mountinfo)
    return str(proc)


def _write(folder: Path, **files) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def test_a_cgroup2_limit_of_a_parent_group_caps_the_memory_available(tmp_path):
    mount = tmp_path / "cg2"
    # The job's group (limit 16 GiB, 7 GiB used: 3 GiB file cache, of which 1 GiB shared memory) holds the
    # step's group.
    _write(mount / "job", memory_max=str(16 * GIB), memory_current=str(7 * GIB),
           memory_stat=f"anon {4 * GIB}\nfile {3 * GIB}\nactive_file {2 * GIB}\nshmem {GIB}\n")
    _write(mount / "job" / "step", memory_max="max", memory_current=str(7 * GIB), memory_stat="file 0\n")
    proc = _proc(tmp_path, "0::/job/step\n",
                 f"30 20 0:26 / {mount} rw,nosuid - cgroup2 cgroup2 rw\n")
    assert resources.cgroup_available_memory(proc) == 11 * GIB  # 16 - 7 + the 2 GiB of reclaimable cache
    assert resources.available_memory(proc) == 11 * GIB


def test_a_container_sees_its_group_at_the_mount_root(tmp_path):
    mount = tmp_path / "cg2"
    _write(mount, memory_max=str(4 * GIB), memory_current=str(GIB), memory_stat="file 0\n")
    # Inside a container the mount's root is the container's own group.
    proc = _proc(tmp_path, "0::/docker/abc\n", f"30 20 0:26 /docker/abc {mount} rw - cgroup2 cgroup2 rw\n")
    assert resources.available_memory(proc) == 3 * GIB


def test_a_cgroup1_hierarchical_limit_counts_and_no_limit_leaves_memavailable(tmp_path):
    mount = tmp_path / "memory"
    _write(mount / "slurm" / "job1", memory_limit_in_bytes=str(2**63 - 4096), memory_usage_in_bytes=str(3 * GIB),
           memory_stat=f"hierarchical_memory_limit {8 * GIB}\ntotal_cache {2 * GIB}\ntotal_shmem {GIB}\n")
    line = f"40 20 0:30 / {mount} rw - cgroup cgroup rw,memory\n"
    proc = _proc(tmp_path, "4:memory:/slurm/job1\n0::/\n", line)
    assert resources.available_memory(proc) == 6 * GIB
    _write(mount / "slurm" / "job1", memory_stat=f"hierarchical_memory_limit {2**63 - 4096}\n")
    assert resources.cgroup_available_memory(proc) is None
    assert resources.available_memory(proc) == 20 * GIB


def test_a_group_over_its_limit_has_nothing_left_and_memavailable_can_be_lower(tmp_path):
    mount = tmp_path / "cg2"
    _write(mount / "g", memory_max=str(GIB), memory_current=str(2 * GIB), memory_stat="")
    proc = _proc(tmp_path, "0::/g\n", f"30 20 0:26 / {mount} rw - cgroup2 cgroup2 rw\n", mem_available=GIB // 2)
    assert resources.cgroup_available_memory(proc) == 0
    big = _proc(tmp_path / "b", "0::/g\n", f"30 20 0:26 / {mount} rw - cgroup2 cgroup2 rw\n", mem_available=GIB // 2)
    _write(mount / "g", memory_max=str(64 * GIB))
    assert resources.available_memory(big) == GIB // 2
