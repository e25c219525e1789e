"""``edgesam info``: verify a bundle's hashes and summarise it, or say what one ONNX file is (no MNN,
onnx or torch needed)."""
from __future__ import annotations

from edgesam.bundle import load_bundle


def bundle_summary(path: str) -> tuple[str, dict]:
    b = load_bundle(path, verify=True)  # raises BundleError on any missing/tampered file
    m = b.manifest
    ck = m.get("checkpoint", {})
    src = f"random init seed {ck['random_init_seed']} (UNTRAINED)" if "random_init_seed" in ck else \
        f"checkpoint {ck.get('file')} sha256 {str(ck.get('sha256'))[:12]}"
    lines = [f"bundle {b.root}: {m['model']}, format v{m['version']}, decoder {m['decoder']['variant']}",
             f"weights: {src}"]
    fl = m.get("flops", {})
    if fl:
        lines.append(f"flops: encoder {fl['encoder'] / 1e9:.1f} GFLOP, decoder {fl['decoder_per_prompt'] / 1e9:.2f} "
                     f"GFLOP per prompt")
    for f in m["files"]:
        lines.append(f"  ok  {f['role']:<8} {f['format']:<18} {f['precision']:<5} {f['bytes'] / 1e6:9.1f} MB  {f['path']}")
    par = m.get("parity", {})
    if par:
        n = len(par.get("cells", []))
        lines.append(f"parity at convert time: {'ok' if par.get('ok') else 'FAILED'} ({n} checks vs {par.get('reference')})")
    trt = m.get("tensorrt")
    if trt:
        p = trt["profile"]
        lines.append(f"tensorrt: decoder profile B {p['B']}, N {p['N']} (min/opt/max); trtexec lines in "
                     f"manifest.json 'tensorrt.commands' (engines are built on the device, not here)")
    lines.append(f"all {len(m['files'])} files verified (size + sha256)")
    return "\n".join(lines), {"bundle": str(b.root), "verified": True, "manifest": m}


def onnx_file_summary(path: str) -> tuple[str, dict]:
    """One .onnx file: its metadata_props (edgesam's provenance: model, role, contract, checkpoint
    sha256, edgesam version), inputs and outputs."""
    from edgesam.manifest import CONTRACTS
    from edgesam.onnxinfo import format_summary, read_onnx_summary

    s = read_onnx_summary(path)
    text = format_summary(path, s)
    contract = s.metadata.get("contract")
    if contract in CONTRACTS:
        text += f"\ncontract {contract}: {CONTRACTS[contract]}"
    data = {"onnx": str(path), "opset": s.opset, "producer": s.producer, "metadata": s.metadata,
            "inputs": [{"name": n, "dtype": t, "shape": d} for n, t, d in s.inputs],
            "outputs": [{"name": n, "dtype": t, "shape": d} for n, t, d in s.outputs]}
    return text, data
