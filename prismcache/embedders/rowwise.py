"""Per-row activation quantization for a ``quantize_dynamic`` graph (the ``minilm:dynamic`` model).

``onnxruntime.quantization.quantize_dynamic`` puts a ``DynamicQuantizeLinear`` before every
int8 matrix product: one scale and zero point for the whole ``[batch, tokens, hidden]``
activation tensor of a model call. A text's vector then depends on the texts batched with it
(and on their padding). :func:`rowwise_activations` rewrites each of those steps to quantize
every row (one token's hidden vector) on its own, symmetrically::

    s = max(|x|) / 127 over the row (at least 1e-30 / 127, so a zero row stays zero)
    q = QuantizeLinear(x, s, 128) -> uint8 in [1, 255], zero point 128 for every row

and moves ``s`` past the product: ``y = (q - 128) . (w - 0) * w_scale * s``. Only the zero point
must stay a scalar (onnxruntime's CPU ``MatMulInteger`` and ``MatMulIntegerToFloat`` read one
zero point for all of A), so the products keep their u8 x s8 kernels; the per-row scale is one
multiplication of the product's output. Every token is quantized from its own values only, so
a text's vector is the same alone, in any batch and under any padding.

Each product and its weight scaling (``MatMulInteger -> Cast -> Mul(Mul(a_scale, b_scale))``)
becomes one onnxruntime ``MatMulIntegerToFloat`` (the node onnxruntime's own fusion makes of
that shape) with a constant ``a_scale`` of 1, and the row scale is multiplied in after it: with
the per-row scale as the fused product's ``a_scale`` the vectors came out wrong, silently
(cosine 0.79 to the reference, onnxruntime 1.32), and without the fusion every product pays a
separate cast and scaling pass (about 10% slower measured). The fused node is written here
rather than left to onnxruntime because its fusion only matches while ``a_scale`` is not a
constant (a constant 1 is folded into ``b_scale`` first), and an ``a_scale`` kept as a graph
input blocks constant folding.

Needs ``onnx`` (the ``fast`` extra), imported by the caller.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["rowwise_activations"]

_ONE = "rowwise_one"  # a_scale of every fused product, see above
_TINY = "rowwise_tiny"
_INV127 = "rowwise_inv127"
_ZERO_POINT = "rowwise_zero_point"
_FLAT = "rowwise_flat"


def rowwise_activations(model: Any) -> int:
    """Rewrite, in place, every ``DynamicQuantizeLinear`` of ``model`` (an ``onnx.ModelProto``
    made by ``quantize_dynamic`` with its default ``MatMulInteger`` form) into per-row symmetric
    quantization as the module docstring describes, and move each row scale past the products
    that use it. Returns how many quantization steps were rewritten.

    Raises :class:`ValueError`, leaving the graph untouched, when a ``DynamicQuantizeLinear``
    feeds anything but the A input of ``MatMulInteger`` nodes and their
    ``Mul(a_scale, b_scale) -> Mul(Cast(product), scales)`` output scaling with a constant
    ``b_scale``: a graph of another shape is not one this rewrite is known to keep exact."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {initializer.name for initializer in graph.initializer}
    steps = [node for node in graph.node if node.op_type == "DynamicQuantizeLinear"]
    # per product's output scaling Mul: (its MatMulInteger, the scales Mul, the row scale)
    rescaled: dict[str, tuple[Any, Any, str]] = {}
    fused: set[str] = set()  # the MatMulInteger, Cast and scales Mul nodes each one replaces
    for step in steps:
        quantized, scale, zero_point = step.output
        for user in consumers.get(quantized, []) + consumers.get(zero_point, []):
            if user.op_type != "MatMulInteger" or list(user.input[::2]) != [quantized, zero_point]:
                raise ValueError(f"{step.name}: feeds {user.op_type} {user.name} other than "
                                 "as the A input of MatMulInteger")
        for scales in consumers.get(scale, []):
            weight_scale = [name for name in scales.input if name != scale]
            users = consumers.get(scales.output[0], [])
            if (scales.op_type != "Mul" or len(weight_scale) != 1
                    or weight_scale[0] not in constants or len(users) != 1
                    or users[0].op_type != "Mul"):
                raise ValueError(f"{step.name}: its scale feeds {scales.op_type} {scales.name}, "
                                 "not Mul(a_scale, constant b_scale) -> one output Mul")
            cast = [producers.get(name) for name in users[0].input if name != scales.output[0]]
            if len(cast) != 1 or cast[0] is None or cast[0].op_type != "Cast":
                raise ValueError(f"{users[0].name}: does not scale a Cast of the product")
            product = producers.get(cast[0].input[0])
            if (product is None or product.op_type != "MatMulInteger"
                    or product.input[0] != quantized
                    or len(consumers.get(product.output[0], [])) != 1
                    or len(consumers.get(cast[0].output[0], [])) != 1):
                raise ValueError(f"{cast[0].name}: does not cast one product of {step.name} "
                                 "used only there")
            rescaled[users[0].name] = (product, scales, scale)
            fused.update({product.name, cast[0].name, scales.name})

    rewritten: list[Any] = []
    for node in graph.node:
        if node.op_type == "DynamicQuantizeLinear":
            rewritten += _quantize_rows(node, helper)
            continue
        if node.name in rescaled:
            product, scales, row_scale = rescaled[node.name]
            weight_scale = next(name for name in scales.input if name != row_scale)
            a, b, a_zero_point, *b_zero_point = product.input
            unscaled = f"{node.output[0]}_unscaled_rows"
            rewritten += [
                helper.make_node("MatMulIntegerToFloat",
                                 [a, b, _ONE, weight_scale, a_zero_point, *b_zero_point],
                                 [unscaled], name=f"{product.name}_to_float",
                                 domain="com.microsoft"),
                helper.make_node("Mul", [unscaled, row_scale], [node.output[0]],
                                 name=f"{node.name}_rows"),
            ]
            continue
        if node.name not in fused:
            rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)
    graph.initializer.extend([
        numpy_helper.from_array(np.array(1.0, np.float32), _ONE),
        numpy_helper.from_array(np.array(1e-30, np.float32), _TINY),
        numpy_helper.from_array(np.array(1 / 127, np.float32), _INV127),
        numpy_helper.from_array(np.array(128, np.uint8), _ZERO_POINT),
        numpy_helper.from_array(np.array([-1], np.int64), _FLAT),
    ])
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return len(steps)


def _quantize_rows(step: Any, helper: Any) -> list[Any]:
    """The nodes that replace one ``DynamicQuantizeLinear``, with its three outputs."""
    x = step.input[0]
    quantized, scale, zero_point = step.output
    p = f"{step.name}_rows"

    def node(op: str, inputs: list[str], output: str, **attributes: Any) -> Any:
        return helper.make_node(op, inputs, [output], name=f"{p}_{op}_{output}", **attributes)

    return [
        node("ReduceMax", [x], f"{p}_high", axes=[-1], keepdims=1),
        node("ReduceMin", [x], f"{p}_low", axes=[-1], keepdims=1),
        node("Neg", [f"{p}_low"], f"{p}_minus_low"),
        node("Max", [f"{p}_high", f"{p}_minus_low", _TINY], f"{p}_peak"),
        node("Mul", [f"{p}_peak", _INV127], scale),
        # QuantizeLinear is per-axis only along one axis: the rows as [rows, hidden], axis 0
        node("Flatten", [x], f"{p}_rows", axis=-1),
        node("Reshape", [scale, _FLAT], f"{p}_row_scales"),
        node("Shape", [f"{p}_row_scales"], f"{p}_count"),
        node("Expand", [_ZERO_POINT, f"{p}_count"], f"{p}_row_zero_points"),
        node("QuantizeLinear", [f"{p}_rows", f"{p}_row_scales", f"{p}_row_zero_points"],
             f"{p}_quantized_rows", axis=0),
        node("Shape", [x], f"{p}_shape"),
        node("Reshape", [f"{p}_quantized_rows", f"{p}_shape"], quantized),
        node("Identity", [_ZERO_POINT], zero_point),
    ]
