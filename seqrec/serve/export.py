"""ONNX export of the sequence encoder: items (B, L) int64 → user vector (B, D) or scores (B, N+1).

Uses the TorchScript-based exporter (dynamo=False, opset 17), which handles SASRec's boolean
attention mask in `scaled_dot_product_attention`; batch and length are dynamic axes. Inputs are
left-padded with 0 like every seqrec batch, and L must not exceed the model's max_len.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqrec.errors import SeqrecError
from seqrec.models.base import SequentialRecommender
from seqrec.serve.engine import scores_by_dot_product

OUTPUTS = ("user", "scores")


class _Encoder(nn.Module):
    def __init__(self, model: SequentialRecommender, output: str):
        super().__init__()
        self.model = model
        self.output = output

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        batch = {"items": items}
        if self.output == "scores":
            return self.model.score(batch)
        return self.model.user_representation(batch)


def export_onnx(model: SequentialRecommender, out: str | Path, output: str = "user", opset: int = 17,
                example_length: int | None = None) -> Path:
    """Write the model to `out`; `output='user'` needs a dot-product model (the item table is
    exported separately by the caller, e.g. for a vector database)."""
    if output not in OUTPUTS:
        raise SeqrecError(f"--output {output!r}: use user or scores")
    if output == "user" and not scores_by_dot_product(model):
        raise SeqrecError("this model does not score by user vector · item table; export with --output scores")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    length = example_length or min(model.max_len, 8)
    example = torch.randint(1, model.num_items + 1, (2, length), dtype=torch.int64)
    example[1, : length // 2] = 0  # padding in the example so the traced graph keeps the masks general
    name = "user_vector" if output == "user" else "scores"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(_Encoder(model, output).eval(), (example,), str(out), dynamo=False, opset_version=opset,
                              input_names=["items"], output_names=[name],
                              dynamic_axes={"items": {0: "batch", 1: "length"}, name: {0: "batch"}})
        except Exception as e:  # the exporter's own errors are not SeqrecErrors; say what failed
            raise SeqrecError(f"ONNX export of model '{type(model).__name__}' failed: {e}") from e
    _fix_bool_eyelike(out)
    return out


def _fix_bool_eyelike(path: Path) -> None:
    """`torch.eye(..., dtype=bool)` exports as a boolean EyeLike, which ONNX Runtime does not
    implement; rewrite each one as Cast(float) → EyeLike(float) → Cast(bool), same values."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    graph = model.graph
    nodes = list(graph.node)
    changed = False
    for node in nodes:
        if node.op_type != "EyeLike":
            continue
        dtype = next((a.i for a in node.attribute if a.name == "dtype"), None)
        if dtype not in (None, TensorProto.BOOL):
            continue
        src, dst = node.input[0], node.output[0]
        cast_in, eye_out = f"{node.name}_float_in", f"{node.name}_float_out"
        pos = list(graph.node).index(node)
        graph.node.insert(pos, helper.make_node("Cast", [src], [cast_in], to=TensorProto.FLOAT,
                                                name=f"{node.name}/cast_in"))
        node.input[0] = cast_in
        node.output[0] = eye_out
        del node.attribute[:]
        node.attribute.append(helper.make_attribute("dtype", TensorProto.FLOAT))
        graph.node.insert(pos + 2, helper.make_node("Cast", [eye_out], [dst], to=TensorProto.BOOL,
                                                    name=f"{node.name}/cast_out"))
        changed = True
    if changed:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))


def onnx_scores(path: str | Path, items: np.ndarray) -> np.ndarray:
    """Run an exported model with ONNX Runtime (CPU): for parity checks and clients without torch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"items": np.ascontiguousarray(items, dtype=np.int64)})[0]
