"""The text MIL parser (``mlc.io.compiled.mil_text``): literal forms, structure, control flow,
errors that name the line and column, and hostile input."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

import mlc
from mlc.frontends.mil.ir import parse_program
from mlc.io.compiled.mil_text import MILSyntaxError, parse_mil_text
from mlc.runtime import limits

HEADER = 'program(1.3)\n[buildInfo = dict<string, string>({{"coremlc-version", "3500.32.1"}})]\n{\n'


def program(body: str, inputs: str = "tensor<fp32, [2]> x", outputs: str = "y", attrs: str = "", opset: str = "ios17") -> str:
    return f"{HEADER}    func main<{opset}>({inputs}){attrs} {{\n{body}\n    }} -> ({outputs});\n}}\n"


def const_values(text: str, model_dir=None) -> dict:
    """Every const's value, as mlc's IR reads the parsed protobuf."""
    parsed = parse_program(parse_mil_text(text, "t.mil", model_dir), model_dir, "t.mil")
    return {op.outputs[0].name: op.attributes["val"] for op in parsed.functions["main"].iter_operations() if op.type == "const"}


def test_literal_forms():
    body = """
        fp16 h = const()[name = string("h"), val = fp16(0x1.388p+13)];
        tensor<fp16, [4]> hs = const()[name = string("hs"), val = tensor<fp16, [4]>([-inf, inf, 0x1p-24, -0x1.8p+1])];
        tensor<fp32, [2, 2]> m = const()[name = string("m"), val = tensor<fp32, [2, 2]>([[1.5, -2], [3e2, nan]])];
        fp64 d = const()[name = string("d"), val = fp64(0.1)];
        int64 big = const()[name = string("big"), val = int64(-9223372036854775808)];
        uint64 ubig = const()[name = string("ubig"), val = uint64(64)];
        tensor<uint8, [3]> u8 = const()[name = string("u8"), val = tensor<uint8, [3]>([0, 128, 255])];
        tensor<int8, [2]> i8 = const()[name = string("i8"), val = tensor<int8, [2]>([-128, 127])];
        tensor<int4, [3]> i4 = const()[name = string("i4"), val = tensor<int4, [3]>([-8, 7, -1])];
        tensor<uint2, [5]> u2 = const()[name = string("u2"), val = tensor<uint2, [5]>([0, 1, 2, 3, 1])];
        tensor<uint16, [1]> u16 = const()[name = string("u16"), val = tensor<uint16, [1]>([65535])];
        tensor<uint32, [1]> u32 = const()[name = string("u32"), val = tensor<uint32, [1]>([4294967295])];
        tensor<int16, [1]> i16 = const()[name = string("i16"), val = tensor<int16, [1]>([-32768])];
        tensor<bool, [2]> b = const()[name = string("b"), val = tensor<bool, [2]>([true, false])];
        string s = const()[name = string("s"), val = string("tab\\there \\"quoted\\" \\\\ \\u00e9 \\x41")];
        tensor<string, [2]> ss = const()[name = string("ss"), val = tensor<string, [2]>(["a", "\u00fc"])];
        tensor<int32, [0]> empty = const()[name = string("empty"), val = tensor<int32, [0]>([])];
        tensor<int32, [2, 3]> flat = const()[name = string("flat"), val = tensor<int32, [2, 3]>([1, 2, 3, 4, 5, 6])];
        tensor<fp16, [2]> typed = const()[name = string("typed"), val = tensor<fp16, [2]>([fp16(1), fp16(0x1p-1)])];
        tensor<fp32, [2]> y = identity(x = x)[name = string("y")];"""
    v = const_values(program(body))
    assert v["h"] == np.float16(10000) and v["h"].dtype == np.float16
    np.testing.assert_array_equal(v["hs"], np.array([-np.inf, np.inf, 2.0**-24, -3], np.float16))
    assert v["m"].dtype == np.float32 and v["m"][0].tolist() == [1.5, -2] and v["m"][1, 0] == 300 and math.isnan(v["m"][1, 1])
    assert v["d"] == 0.1 and v["d"].dtype == np.float64
    assert v["big"] == -(2**63) and v["ubig"] == 64
    assert v["u8"].tolist() == [0, 128, 255] and v["i8"].tolist() == [-128, 127]
    assert v["i4"].tolist() == [-8, 7, -1] and v["u2"].tolist() == [0, 1, 2, 3, 1]
    assert v["u16"].tolist() == [65535] and v["u32"].tolist() == [4294967295] and v["i16"].tolist() == [-32768]
    assert v["b"].tolist() == [True, False]
    assert v["s"] == 'tab\there "quoted" \\ \u00e9 A'
    assert v["ss"].tolist() == ["a", "\u00fc"]
    assert v["empty"].shape == (0,) and v["flat"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert v["typed"].tolist() == [1.0, 0.5]


def test_old_style_literals_and_compound_values():
    """program(1.0) writes tensor<string, []>("...") where program(1.3) writes string("...");
    tuples, lists and nested dictionaries as in FlexibleShapeInformation."""
    flexible = (
        " [FlexibleShapeInformation = tuple<tuple<tensor<string, []>, dict<tensor<string, []>, tensor<int32, [?]>>>, "
        "tuple<tensor<string, []>, dict<tensor<string, []>, list<tensor<int32, [2]>, ?>>>>"
        '((("DefaultShapes", {{"x", [1, 2]}}), ("RangeDims", {{"x", [[1, 1], [2, 8]]}})))]'
    )
    body = """
        tensor<int32, []> a = const()[name = tensor<string, []>("a"), val = tensor<int32, []>(-3)];
        tensor<fp32, [1, ?]> y = identity(x = x)[name = tensor<string, []>("y")];"""
    text = program(body, inputs="tensor<fp32, [1, ?]> x", attrs=flexible).replace("program(1.3)", "program(1.0)")
    parsed = parse_mil_text(text, "t.mil")
    fn = parsed.functions["main"]
    assert fn.opset == "CoreML7"
    assert fn.inputs[0].type.tensorType.dimensions[1].WhichOneof("dimension") == "unknown"
    ir = parse_program(parsed, None, "t.mil")
    assert ir.attributes["buildInfo"] == {"coremlc-version": np.array("3500.32.1", dtype=object)}
    info = fn.attributes["FlexibleShapeInformation"].immediateValue.tuple.values
    default, ranges = info[0].immediateValue.tuple.values, info[1].immediateValue.tuple.values
    assert default[0].immediateValue.tensor.strings.values == ["DefaultShapes"]
    pair = default[1].immediateValue.dictionary.values[0]
    assert pair.value.type.tensorType.dimensions[0].constant.size == 2  # the shape of [1, 2], not "?"
    assert list(pair.value.immediateValue.tensor.ints.values) == [1, 2]
    bounds = ranges[1].immediateValue.dictionary.values[0].value.immediateValue.list.values
    assert [list(b.immediateValue.tensor.ints.values) for b in bounds] == [[1, 1], [2, 8]]


def test_several_outputs_variadic_inputs_literal_inputs_and_states():
    body = """
        tensor<fp32, [2]> a, tensor<fp32, [2]> b = split(num_splits = int32(2), axis = int32(0), x = xx)[name = string("split")];
        tensor<fp32, [4]> y = concat(axis = int32(0), interleave = bool(false), values = (b, a))[name = string("cat")];
        tensor<fp16, [1, 2]> s = read_state(input = st)[name = string("read")];"""
    parsed = parse_mil_text(program(body, inputs="tensor<fp32, [4]> xx, state<tensor<fp16, [1, 2]>> st"), "t.mil")
    ops = parsed.functions["main"].block_specializations["CoreML7"].operations
    assert [o.name for o in ops[0].outputs] == ["a", "b"]
    assert [b.name for b in ops[1].inputs["values"].arguments] == ["b", "a"]
    assert ops[1].inputs["axis"].arguments[0].value.immediateValue.tensor.ints.values == [0]
    assert parsed.functions["main"].inputs[1].type.stateType.wrappedType.tensorType.dataType == 10  # FLOAT16


def test_multifunction_programs():
    text = (
        HEADER
        + "    func main<ios18>(tensor<fp32, [2]> x) {\n        tensor<fp32, [2]> y = relu(x = x)[name = string(\"r\")];\n    } -> (y);\n"
        + "    func other<ios18>(tensor<fp32, [3]> x) {\n        tensor<fp32, [3]> y = exp(x = x)[name = string(\"e\")];\n    } -> (y);\n}\n"
    )
    parsed = parse_mil_text(text, "t.mil")
    assert sorted(parsed.functions) == ["main", "other"]
    assert parsed.functions["other"].opset == "CoreML8"


CONTROL_FLOW = """
        tensor<int32, []> count = squeeze(x = n)[name = string("count")];
        int32 zero = const()[name = string("zero"), val = int32(0)];
        int32 i_out, tensor<fp32, [3]> doubled = while_loop(loop_vars = (zero, x))[name = string("loop")]
            loop_body(int32 i_1, tensor<fp32, [3]> acc_1) {
                int32 next = add(x = i_1, y = int32(1))[name = string("next")];
                tensor<fp32, [3]> twice = mul(x = acc_1, y = fp32(2))[name = string("twice")];
            } -> (next, twice)
            loop_cond(int32 i, tensor<fp32, [3]> acc) {
                bool more = less(x = i, y = count)[name = string("more")];
            } -> (more);
        fp32 total = reduce_sum(x = doubled, keep_dims = bool(false))[name = string("total")];
        bool positive = greater(x = total, y = fp32(0))[name = string("positive")];
        tensor<fp32, [3]> z = cond(pred = positive)[name = string("branch")]
            {
                tensor<fp32, [3]> up = add(x = doubled, y = fp32(1))[name = string("up")];
            } -> (up)
            {
                tensor<fp32, [3]> down = sub(x = doubled, y = fp32(1))[name = string("down")];
            } -> (down);"""


def write_folder(tmp_path, text: str, inputs: list, outputs: list, version: int = 8) -> str:
    """A compiled folder of a text program and a metadata.json (no coremldata.bin, no weights)."""
    folder = tmp_path / "Model.mlmodelc"
    folder.mkdir()
    (folder / "model.mil").write_text(text, encoding="utf-8")

    def schema(name, dtype, shape):
        return {"name": name, "type": "MultiArray", "dataType": dtype, "shape": json.dumps(shape), "hasShapeFlexibility": "0", "isOptional": "0"}

    meta = {
        "specificationVersion": version,
        "author": "mlc tests",
        "inputSchema": [schema(*i) for i in inputs],
        "outputSchema": [schema(*o) for o in outputs],
    }
    (folder / "metadata.json").write_text(json.dumps([meta]), encoding="utf-8")
    return str(folder)


def test_control_flow_blocks_run(tmp_path):
    """while_loop (body written before cond: put in the proto's order by name) and cond."""
    text = program(CONTROL_FLOW, inputs="tensor<fp32, [3]> x, tensor<int32, [1]> n", outputs="z")
    parsed = parse_mil_text(text, "t.mil")
    loop = parsed.functions["main"].block_specializations["CoreML7"].operations[2]
    assert loop.type == "while_loop" and list(loop.blocks[0].outputs) == ["more"] and len(loop.blocks[1].inputs) == 2
    path = write_folder(tmp_path, text, [("x", "Float32", [3]), ("n", "Int32", [1])], [("z", "Float32", [3])])
    model = mlc.load(path)
    for x, n in [([1, -2, 3], 2), ([-1, -2, 0.5], 3), ([0.5, 0.25, 1], 0)]:
        x = np.array(x, np.float32)
        y = x * 2.0**n
        expected = y + 1 if y.sum() > 0 else y - 1
        np.testing.assert_allclose(model.predict({"x": x, "n": np.array([n], np.int32)})["z"], expected)
    assert model.spec.specificationVersion == 8 and model.spec.description.metadata.author == "mlc tests"


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, line, column, message",
    [
        ("program(1.0)\n{\n    func main<ios16>(tensor<fp32, [2]> x) {\n        tensor<fp32, [2]> y = relu(x = x)[name = string(\"r\")]\n    } -> (y);\n}\n",
         5, 5, "expected ';'"),
        ("program(1.0)\n{\n    func main<ios99>() {\n    } -> ();\n}\n", 3, 15, "unknown opset 'ios99'"),
        ("program(1.0)\n{\n  func main<ios16>(tensor<fp33, [2]> x) {\n  } -> ();\n}\n", 3, 27, "unknown data type 'fp33'"),
        ("program(1.0)\n{\n  func main<ios16>() {\n    int32 a = const()[val = int32(1) $];\n  } -> ();\n}\n", 4, 38, r"unexpected character '\$'"),
        ("program(1.0)\n{\n  func main<ios16>() {\n    int8 a = const()[val = int8(300)];\n  } -> ();\n}\n", 4, 33, "outside the range of int8"),
        ("program(1.0)\n{\n  func main<ios16>() {\n    tensor<int32, [3]> a = const()[val = tensor<int32, [3]>([1, 2])];\n  } -> ();\n}\n",
         4, 61, r"does not match tensor<int32, \[3\]>"),
        ("program(1.0)\n{\n  func main<ios16>() {\n    tensor<int32, [2]> a = const()[val = tensor<int32, [2]>([1, 2])];\n",
         5, 1, "the file ends inside a block"),
        ('program(1.0)\n{\n  func main<ios16>() {\n    string s = const()[val = string("\\q")];\n  } -> ();\n}\n', 4, 37, "unknown escape"),
        ("program(2.0)\n{\n}\n", 1, 9, "program version 2.0 is unknown"),
        ("hello", 1, 1, "expected 'program'"),
    ],
)
def test_syntax_errors_name_the_line_and_column(text, line, column, message):
    with pytest.raises(MILSyntaxError, match=message) as info:
        parse_mil_text(text, "Model.mlmodelc/model.mil")
    assert (info.value.line, info.value.column) == (line, column)
    assert str(info.value).startswith(f"Model.mlmodelc/model.mil:{line}:{column}: ")
    assert isinstance(info.value, mlc.MLCError) and info.value.code == "io"


def test_a_broken_model_mil_is_an_mlc_error_naming_the_file(tmp_path):
    text = program("        tensor<fp32, [2]> y = relu(x = x)[name = string(\"r\")]")  # no ';'
    path = write_folder(tmp_path, text, [("x", "Float32", [2])], [("y", "Float32", [2])])
    with pytest.raises(mlc.MLCError, match=r"Model\.mlmodelc/model\.mil:6:5: expected ';'"):
        mlc.load(path)


@pytest.mark.parametrize(
    "path",
    ["@model_path/../outside.bin", "@model_path/weights/../../outside.bin", "@model_path//etc/passwd", "/etc/passwd", "weights/weight.bin"],
)
def test_a_blobfile_path_leaving_the_folder_is_refused(tmp_path, path):
    body = (
        f'        tensor<fp32, [2]> w = const()[name = string("w"), val = tensor<fp32, [2]>(BLOBFILE(path = string("{path}"), offset = uint64(64)))];\n'
        '        tensor<fp32, [2]> y = add(x = x, y = w)[name = string("y")];'
    )
    (tmp_path / "outside.bin").write_bytes(b"\0" * 256)
    folder = write_folder(tmp_path, program(body), [("x", "Float32", [2])], [("y", "Float32", [2])])
    with pytest.raises(MILSyntaxError, match="BLOBFILE path") as info:
        mlc.load(folder)
    assert info.value.line == 5


def test_a_symlink_out_of_the_folder_is_refused(tmp_path):
    body = (
        '        tensor<fp32, [2]> w = const()[name = string("w"), val = tensor<fp32, [2]>(BLOBFILE(path = string("@model_path/weights/weight.bin"), offset = uint64(64)))];\n'
        '        tensor<fp32, [2]> y = add(x = x, y = w)[name = string("y")];'
    )
    folder = write_folder(tmp_path, program(body), [("x", "Float32", [2])], [("y", "Float32", [2])])
    (tmp_path / "secret").mkdir()
    os.symlink(tmp_path / "secret", os.path.join(folder, "weights"))
    with pytest.raises(MILSyntaxError, match="leaves the model folder"):
        mlc.load(folder)


@pytest.mark.parametrize(
    "body",
    [
        "        tensor<int32, [1]> a = const()[val = tensor<int32, [1]>(" + "[" * 5000 + "1" + "]" * 5000 + ")];",
        "        " + "list<" * 5000 + "int32" + ", ?>" * 5000 + " a = const()[];",
        "        int32 a = cond(pred = p)[] " + "{ int32 b = cond(pred = p)[] " * 3000 + "} -> ();",
    ],
    ids=["literal", "type", "blocks"],
)
def test_deep_nesting_is_refused_without_recursion_errors(body):
    with pytest.raises(MILSyntaxError, match=f"nest more than {limits.MAX_NESTING} levels deep"):
        parse_mil_text(program(body), "t.mil")


def test_declared_sizes_are_checked_before_anything_is_built():
    body = "        tensor<fp32, [100000, 100000, 100000]> a = const()[val = tensor<fp32, [100000, 100000, 100000]>(0)];"
    with pytest.raises(MILSyntaxError, match=r"t\.mil:5:.*more than the limit"):
        parse_mil_text(program(body), "t.mil")
    huge = "        tensor<int32, [1]> a = const()[val = tensor<int32, [1]>([" + "9" * 5000 + "])];"
    with pytest.raises(MILSyntaxError, match="outside the range of int32"):
        parse_mil_text(program(huge), "t.mil")


def test_a_file_that_is_not_utf8_names_the_place(tmp_path):
    from mlc.io.compiled.mil_text import read_mil_file

    path = tmp_path / "model.mil"
    path.write_bytes(b'program(1.0)\n{\n  // caf\xe9\n}\n')
    with pytest.raises(MILSyntaxError, match=r"model\.mil:3:9: the file is not UTF-8"):
        read_mil_file(path)


def test_an_op_mlc_cannot_run_is_named_with_its_line_and_column(tmp_path):
    body = '        tensor<fp32, [2]> y = frobnicate(x = x)[name = string("frob")];'
    folder = write_folder(tmp_path, program(body), [("x", "Float32", [2])], [("y", "Float32", [2])])
    with pytest.raises(mlc.MLCUnsupportedError, match=r"'frobnicate' \(operation 'frob', .*at .*Model\.mlmodelc/model\.mil:5:31\)"):
        mlc.load(folder)
