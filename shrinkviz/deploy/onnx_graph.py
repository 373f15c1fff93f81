"""A rewrite of the QDQ graph the legacy exporter writes for eager INT8 models, so ONNX Runtime fuses it.

Eager quantization applies the ReLU after a residual add (``act(add(body, shortcut))``) to a tensor
already quantized with the add's (scale s, zero point z), and the exporter writes it as
``QuantizeLinear(s, z) -> Cast -> DequantizeLinear(s, z) -> Relu -> QuantizeLinear(s, z)``. ONNX Runtime
cannot fuse the float Relu into its ``QLinearAdd``, so each block pays a dequantize / relu / quantize
round trip. The same values come out of ``QuantizeLinear(s, 0)``: quantizing with zero point 0 clamps
negatives to 0 (the ReLU) on the same grid, and keeps every positive level the original kept (it only
extends the top of the range). :func:`fold_quantized_relus` makes that change and sets zero point 0 on
the dequantizers that read the result, after which ONNX Runtime's graph is the one it builds for its own
static quantization (QLinearAdd with the ReLU eliminated).

Example:
    >>> import onnxruntime as ort
    >>> from onnx import TensorProto, helper
    >>> qdq = [("QuantizeLinear", "x", "q"), ("DequantizeLinear", "q", "d"), ("Relu", "d", "r"),
    ...        ("QuantizeLinear", "r", "q2"), ("DequantizeLinear", "q2", "y")]
    >>> nodes = [helper.make_node(op, [a, "s", "z"] if op != "Relu" else [a], [b]) for op, a, b in qdq]
    >>> init = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
    ...         numpy_helper.from_array(np.array(128, np.uint8), "z")]
    >>> io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [4]) for name in ("x", "y")]
    >>> model = helper.make_model(helper.make_graph(nodes, "g", io[:1], io[1:], init),
    ...                           opset_imports=[helper.make_opsetid("", 13)])
    >>> options = ort.SessionOptions(); options.log_severity_level = 3
    >>> def run(m):
    ...     session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ...     return session.run(None, {"x": np.array([-1.0, -0.05, 0.3, 2.0], np.float32)})[0].tolist()
    >>> before = run(model)
    >>> fold_quantized_relus(model), [node.op_type for node in model.graph.node]
    (1, ['QuantizeLinear', 'DequantizeLinear'])
    >>> run(model) == before, [round(v, 4) for v in before]
    (True, [0.0, 0.0, 0.3, 2.0])
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _constant(graph: onnx.GraphProto, producers: dict, name: str) -> np.ndarray | None:
    node = producers.get(name)
    if node is not None and node.op_type == "Constant":
        return numpy_helper.to_array(node.attribute[0].t)
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def fold_quantized_relus(model: onnx.ModelProto) -> int:
    """Rewrite ``Q(s,z) -> [Cast] -> DQ(s,z) -> Relu -> Q(s,z)`` into ``Q(s,0)`` in place; return the count.

    A pattern is rewritten only when every intermediate output has a single consumer, the two
    quantizers share scale and zero point, and everything reading the result is a dequantizer with that
    scale and zero point (possibly behind no-op Casts); anything else is left as exported.
    """
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only(name: str, op: str) -> onnx.NodeProto | None:
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and users[0].op_type == op else None

    def qparams(node: onnx.NodeProto) -> tuple[np.ndarray, np.ndarray] | None:
        if len(node.input) < 3:
            return None
        scale, zero = _constant(graph, producers, node.input[1]), _constant(graph, producers, node.input[2])
        return None if scale is None or zero is None or scale.size != 1 or zero.size != 1 else (scale, zero)

    removed: list[onnx.NodeProto] = []
    folded = 0
    for relu in [n for n in graph.node if n.op_type == "Relu"]:
        dq = producers.get(relu.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or len(consumers.get(dq.output[0], [])) != 1:
            continue
        cast = producers.get(dq.input[0])
        q1 = producers.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else cast
        if q1 is None or q1.op_type != "QuantizeLinear" or len(consumers.get(q1.output[0], [])) != 1:
            continue
        if cast is not q1 and len(consumers.get(cast.output[0], [])) != 1:
            continue
        q2 = only(relu.output[0], "QuantizeLinear")
        params = [qparams(n) for n in (q1, dq, q2)] if q2 is not None else [None]
        if any(p is None for p in params) or not all(
            np.array_equal(params[0][0], p[0]) and np.array_equal(params[0][1], p[1]) for p in params[1:]
        ):
            continue
        readers: list[onnx.NodeProto] = []
        frontier = [q2.output[0]]
        while frontier:
            for user in consumers.get(frontier.pop(), []):
                if user.op_type == "Cast":
                    frontier.append(user.output[0])
                else:
                    readers.append(user)
        read_params = [qparams(r) if r.op_type == "DequantizeLinear" else None for r in readers]
        if not readers or any(
            p is None or not (np.array_equal(p[0], params[0][0]) and np.array_equal(p[1], params[0][1]))
            for p in read_params
        ):
            continue
        zero_name = f"{q1.output[0]}_zero_point_0"
        zero = numpy_helper.from_array(np.zeros_like(params[0][1]), zero_name)
        graph.initializer.append(zero)
        q1.input[2] = zero_name
        for reader in readers:
            reader.input[2] = zero_name
        # q2's consumers read q1's (cast) output instead; dq, relu and q2 go
        for user in consumers.get(q2.output[0], []):
            for i, name in enumerate(user.input):
                if name == q2.output[0]:
                    user.input[i] = dq.input[0]
        removed.extend([dq, relu, q2])
        folded += 1
    for node in removed:
        graph.node.remove(node)
    return folded
