"""deepfake_xai.runtime: the torch thread count from affinity, cgroup quota and the environment."""

from __future__ import annotations

import os

import pytest
import torch

from deepfake_xai import runtime


@pytest.fixture
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def write(root, files: dict[str, str]):
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "garbage\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "250000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        (
            {
                "cpu.max": "max 100000\n",
                "cpu/cpu.cfs_quota_us": "50000",
                "cpu/cpu.cfs_period_us": "100000",
            },
            0.5,
        ),
        ({}, None),
    ],
    ids=["v2", "v2-unlimited", "v2-garbage", "v1", "v1-unlimited", "v2-max-then-v1", "none"],
)
def test_cgroup_quota_from_fake_files(tmp_path, files, quota):
    assert runtime.cgroup_cpu_quota(write(tmp_path, files)) == quota


def test_usable_cpus_is_capped_by_the_quota_and_rounded_up(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert runtime.usable_cpus(write(tmp_path / "a", {"cpu.max": "150000 100000"})) == 2
    assert runtime.usable_cpus(write(tmp_path / "b", {"cpu.max": "max 100000"})) == 8
    assert runtime.usable_cpus(write(tmp_path / "c", {"cpu.max": "5000 100000"})) == 1
    assert runtime.usable_cpus(write(tmp_path / "d", {"cpu.max": "1600000 100000"})) == 8


def test_environment_overrides_and_argument_wins(monkeypatch, keep_threads):
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.configure_threads() == 3 and torch.get_num_threads() == 3
    assert runtime.configure_threads(2) == 2 and torch.get_num_threads() == 2
    monkeypatch.setenv(runtime.THREADS_ENV, " ")
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 1)
    assert runtime.configure_threads() == 1


@pytest.mark.parametrize("value", ["abc", "0", "-2", "1.5"])
def test_bad_environment_values_are_clear_errors(monkeypatch, value, keep_threads):
    monkeypatch.setenv(runtime.THREADS_ENV, value)
    with pytest.raises(ValueError, match=f"DEEPFAKE_XAI_THREADS='{value}'"):
        runtime.configure_threads()


@pytest.mark.parametrize("value", [0, -1, True])
def test_bad_arguments_are_clear_errors(value, keep_threads):
    with pytest.raises(ValueError, match="threads must be at least 1"):
        runtime.configure_threads(value)


def test_the_allocator_is_tuned_on_glibc_unless_opted_out(monkeypatch):
    for name in (runtime.ALLOCATOR_ENV, *runtime.GLIBC_MALLOC_ENV):
        monkeypatch.delenv(name, raising=False)
    glibc = runtime.platform.libc_ver()[0] == "glibc"
    assert runtime._tune_allocator() == ("applied" if glibc else "not glibc")
    monkeypatch.setenv(runtime.ALLOCATOR_ENV, "off")
    assert runtime._tune_allocator() == "opted out"
    monkeypatch.setenv(runtime.ALLOCATOR_ENV, "1")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    assert runtime._tune_allocator() == "environment"


def test_the_allocator_is_left_alone_off_glibc(monkeypatch):
    for name in (runtime.ALLOCATOR_ENV, *runtime.GLIBC_MALLOC_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("", ""))
    assert runtime._tune_allocator() == "not glibc"
    assert runtime.configure_allocator() == runtime.configure_allocator()  # once per process


def test_torch_threads_for_a_block_are_put_back_even_on_errors(keep_threads):
    torch.set_num_threads(2)
    with runtime.torch_threads(1) as count:
        assert count == torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError, match="inside"), runtime.torch_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2
