from pathlib import Path

from slidingserve.metrics.host import host_info


def test_host_info_reads_model_and_isa(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\n"
                       "flags\t\t: fpu sse avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n")
    info = host_info(cpuinfo)
    assert info["cpu"] == "AMD EPYC 9R14"
    assert info["isa"] == ["avx2", "avx512f", "avx512_bf16"]
    assert info["cores"] >= 1


def test_host_info_without_cpuinfo(tmp_path: Path) -> None:
    info = host_info(tmp_path / "absent")
    assert info["isa"] == [] and isinstance(info["cpu"], str) and info["cpu"]
