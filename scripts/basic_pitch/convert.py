#!/usr/bin/env python3
"""Convert basic-pitch's ONNX model (shipped in the `basic-pitch` PyPI package) to safetensors.

    pip install --no-deps basic-pitch==0.4.0 && pip install -r scripts/basic_pitch/requirements.txt
    python scripts/basic_pitch/convert.py            # writes models/basic_pitch/basic_pitch.safetensors

The ONNX graph is TensorFlow's export of `basic_pitch.models.model()` (ICASSP 2022 checkpoint). tf2onnx folded
each BatchNormalization that follows a convolution into that convolution's weight and bias, and the batch norm
on the CQT into one scale and one shift, so the keys below hold the folded values. The harmonic CQT's fixed
kernels (nnAudio's CQT2010v2 as basic-pitch builds it) are exported too, so the Rust front end uses exactly the
reference's numbers instead of recomputing them.

Keys (shapes as in the ONNX graph: conv weights are [out, in, k_time, k_freq]):
  cqt.kernel_real     [36, 1, 256]  top-octave CQT kernels, real part
  cqt.kernel_imag     [36, 1, 256]  top-octave CQT kernels, imaginary part (sign irrelevant: magnitude only)
  cqt.lowpass         [1, 1, 256]   anti-alias FIR applied before each 2x decimation
  cqt.sqrt_lengths    [309]         librosa-style normalisation, sqrt of each bin's filter length
  cqt_bn.scale/shift  [1]           batch_normalization (on the log-CQT), folded
  contour_1.{weight,bias} [8, 8, 3, 39]  conv2d_1 + batch_normalization_2
  contour_2.{weight,bias} [1, 8, 5, 5]   contours-reduced (sigmoid -> contour output)
  note_1.{weight,bias}    [32, 1, 7, 7]  conv2d_2, stride (1, 3)
  note_2.{weight,bias}    [1, 32, 7, 3]  conv2d_3 (sigmoid -> note output)
  onset_1.{weight,bias}   [32, 8, 5, 5]  conv2d_4 + batch_normalization_3, stride (1, 3)
  onset_2.{weight,bias}   [1, 33, 3, 3]  conv2d_5 (sigmoid -> onset output)
"""
import argparse
import hashlib
import os
import shutil

import numpy as np
import onnx
from onnx import numpy_helper
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
# sha256 of saved_models/icassp_2022/nmp.onnx in basic-pitch 0.4.0
NMP_ONNX_SHA256 = "2c3c1d144bfa61ad236e92e169c13535c880469a12a047d4e73451f2c059a0ec"


def package_dir() -> str:
    import importlib.util

    spec = importlib.util.find_spec("basic_pitch")
    if spec is None or spec.origin is None:
        raise SystemExit("basic_pitch is not installed: pip install --no-deps basic-pitch==0.4.0")
    return os.path.dirname(spec.origin)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO, "models", "basic_pitch"))
    args = ap.parse_args()

    pkg = package_dir()
    onnx_path = os.path.join(pkg, "saved_models", "icassp_2022", "nmp.onnx")
    digest = hashlib.sha256(open(onnx_path, "rb").read()).hexdigest()
    if NMP_ONNX_SHA256 and digest != NMP_ONNX_SHA256:
        raise SystemExit(f"unexpected nmp.onnx (sha256 {digest}); this script targets basic-pitch 0.4.0")

    model = onnx.load(onnx_path)
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    out = {}
    convs = [n for n in graph.node if n.op_type == "Conv"]

    # CQT kernels: the conv whose output is negated is the imaginary part (nnAudio's get_cqt_complex).
    for node in convs:
        w = inits[node.input[1]]
        if w.shape == (36, 1, 1, 256):
            assert not np.any(inits[node.input[2]]), "CQT conv bias should be zero"
            is_imag = any(c.op_type == "Neg" for c in consumers[node.output[0]])
            key = "cqt.kernel_imag" if is_imag else "cqt.kernel_real"
            k = w.reshape(36, 1, 256)
            if key in out:
                assert np.array_equal(out[key], k)
            out[key] = k
        elif w.shape == (1, 1, 1, 256):
            assert not np.any(inits[node.input[2]]), "low-pass conv bias should be zero"
            out["cqt.lowpass"] = w.reshape(1, 1, 256)

    # The librosa normalisation: Mul by a [309, 1, 1] constant right after the CQT.
    (sqrt_name,) = [n for n, a in inits.items() if a.shape == (309, 1, 1)]
    out["cqt.sqrt_lengths"] = inits[sqrt_name].reshape(309)

    # Folded batch norm on the log-CQT: Mul then Add by [1] constants right after NormalizedLog.
    for node in graph.node:
        if node.op_type == "Mul" and node.input[1] in inits and inits[node.input[1]].shape == (1,):
            (add,) = consumers[node.output[0]]
            assert add.op_type == "Add"
            out["cqt_bn.scale"] = inits[node.input[1]].copy()
            out["cqt_bn.shift"] = inits[add.input[1]].copy()

    by_shape = {
        (8, 8, 3, 39): "contour_1",
        (1, 8, 5, 5): "contour_2",
        (32, 1, 7, 7): "note_1",
        (1, 32, 7, 3): "note_2",
        (32, 8, 5, 5): "onset_1",
        (1, 33, 3, 3): "onset_2",
    }
    for node in convs:
        w = inits[node.input[1]]
        name = by_shape.get(tuple(w.shape))
        if name is None:
            continue
        out[f"{name}.weight"] = w
        out[f"{name}.bias"] = inits[node.input[2]]

    expected = {"cqt.kernel_real", "cqt.kernel_imag", "cqt.lowpass", "cqt.sqrt_lengths", "cqt_bn.scale", "cqt_bn.shift"}
    expected |= {f"{n}.{p}" for n in by_shape.values() for p in ("weight", "bias")}
    missing = expected - set(out)
    assert not missing, f"missing tensors: {missing}"

    os.makedirs(args.out, exist_ok=True)
    tensors = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(out.items())}
    dest = os.path.join(args.out, "basic_pitch.safetensors")
    save_file(tensors, dest, metadata={"source": "basic-pitch 0.4.0 saved_models/icassp_2022/nmp.onnx", "onnx_sha256": digest})
    dist = [d for d in os.listdir(os.path.dirname(pkg)) if d.startswith("basic_pitch-") and d.endswith(".dist-info")]
    for d in dist:
        for f in ("LICENSE", "NOTICE"):
            src = os.path.join(os.path.dirname(pkg), d, f)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(args.out, f))
    n = sum(v.size for v in tensors.values())
    print(f"wrote {dest}: {len(tensors)} tensors, {n} floats, onnx sha256 {digest}")


if __name__ == "__main__":
    main()
