#!/usr/bin/env python3
"""The (gold, pred, expected) cases of Hugging Face Math-Verify's regression suite, as JSON for
`wst-dash bench answers --cases FILE`. Reads a checkout of huggingface/Math-Verify (its tests/
folder) with Python's own parser (ast), not by pattern matching, and translates each test's call
of compare_strings(gold, pred, match_types=..., precision=..., allow_set_relation_comp=...) into
our options: {"latex": bool, "expr": bool, "precision": int, "allowSetRelation": bool}.

    git clone https://github.com/huggingface/Math-Verify && python3 scripts/math-verify-cases.py Math-Verify > cases.json
"""
import ast, json, math, os, sys

FILES = ["tests/test_all.py", "tests/test_boxed.py", "tests/test_numina_cases.py", "tests/test_open_thoughts.py"]


def literal(node, source):
    try:
        return ast.literal_eval(node)
    except ValueError:  # one case formats its gold with math (an f-string): evaluate with math only
        return eval(compile(ast.Expression(node), "<case>", "eval"), {"__builtins__": {}, "math": math})


def call_options(fn, params):
    """The options of the test's compare_strings call; parametrized arguments come from `params`."""
    for n in ast.walk(fn):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "compare_strings":
            opts = {"latex": True, "expr": True, "precision": 6, "allowSetRelation": False}
            args = {kw.arg: kw.value for kw in n.keywords}
            if len(n.args) > 2:
                args.setdefault("match_types", n.args[2])
            for key, node in args.items():
                value = params[node.id] if isinstance(node, ast.Name) and node.id in params else ast.literal_eval(node)
                if key == "match_types":
                    opts["latex"], opts["expr"] = "latex" in value, "expr" in value
                elif key == "precision":
                    opts["precision"] = value
                elif key == "allow_set_relation_comp":
                    opts["allowSetRelation"] = bool(value)
            return opts
    raise SystemExit(f"no compare_strings call in {fn.name}")


def main(root):
    cases = []
    for rel in FILES:
        path = os.path.join(root, rel)
        source = open(path, encoding="utf-8").read()
        for fn in ast.parse(source).body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            for dec in fn.decorator_list:
                if not (isinstance(dec, ast.Call) and ast.unparse(dec.func) == "pytest.mark.parametrize"):
                    continue
                names = [x.strip() for x in ast.literal_eval(dec.args[0]).split(",")]
                for elt in dec.args[1].elts:
                    params = dict(zip(names, (literal(e, source) for e in elt.elts)))
                    cases.append({"file": rel, "test": fn.name, "line": elt.lineno, "gold": params["gold"], "pred": params["pred"],
                                  "expected": bool(params["expected"]), "options": call_options(fn, params)})
    json.dump(cases, sys.stdout, ensure_ascii=False, indent=1)
    print(f"{len(cases)} cases from {root}", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: math-verify-cases.py PATH/TO/Math-Verify > cases.json")
    main(sys.argv[1])
