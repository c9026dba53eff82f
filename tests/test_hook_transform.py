"""The AST rewrite on its own: which decorators count as poet, qualnames, and that nothing else moves."""

from __future__ import annotations

import ast
import dis
import marshal
import textwrap

from poet_runtime.hook.transform import compile_module, find_poet_functions, rewrite, split_lines


def found(source: str) -> list[str]:
    return [f.qualname for f in find_poet_functions(ast.parse(textwrap.dedent(source)))]


def test_recognises_every_spelling_of_the_decorator():
    source = """
    import poet_runtime
    import poet_runtime as pr
    from poet_runtime import poet as enhance
    from poet_runtime import poet

    @poet
    def bare(): pass

    @poet(domain="api_operations")
    def called(): pass

    @enhance(domain="api_operations")
    def aliased(): pass

    @poet_runtime.poet()
    def dotted(): pass

    @pr.poet
    def module_alias(): pass

    @other.poet
    def not_ours(): pass

    @functools.cache
    def plain(): pass
    """
    assert found(source) == ["bare", "called", "aliased", "dotted", "module_alias"]


def test_qualnames_follow_python_rules():
    source = """
    from poet_runtime import poet

    class Outer:
        class Inner:
            @poet
            def method(self): pass

        @staticmethod
        @poet
        def static(): pass

    def factory():
        @poet
        def inner(): pass
        return inner

    if True:
        @poet
        async def conditional(): pass
    """
    assert found(source) == ["Outer.Inner.method", "Outer.static", "factory.<locals>.inner", "conditional"]


def test_bind_is_outermost_and_on_the_first_decorator_line():
    source = textwrap.dedent("""
        import functools
        from poet_runtime import poet

        @functools.wraps(print)
        @poet(domain="api_operations")
        def f(x):
            return x
    """).lstrip()
    tree = ast.parse(source)
    assert rewrite(tree, "app", source) == 1
    node = tree.body[2]
    first = node.decorator_list[0]
    assert first.lineno == 4 and isinstance(first, ast.Call)
    keywords = {k.arg: k.value.value for k in first.keywords}
    assert keywords["module"] == "app" and keywords["qualname"] == "f" and keywords["lineno"] == 4
    assert keywords["source"] == "".join(split_lines(source)[3:7])
    code = compile(tree, "app.py", "exec")
    function_code = next(c for c in code.co_consts if hasattr(c, "co_name") and c.co_name == "f")
    plain = compile(source, "app.py", "exec")
    plain_function = next(c for c in plain.co_consts if hasattr(c, "co_name") and c.co_name == "f")
    # The function itself is untouched: same bytecode, same line table, same first line.
    assert function_code.co_code == plain_function.co_code
    assert function_code.co_firstlineno == plain_function.co_firstlineno == 4
    assert list(dis.findlinestarts(function_code)) == list(dis.findlinestarts(plain_function))


def test_other_code_keeps_line_numbers():
    source = textwrap.dedent('''
        """doc"""
        from __future__ import annotations
        from poet_runtime import poet

        X = 1

        @poet
        def f(): return X

        def g():
            raise ValueError("line 11")
    ''').lstrip().encode()
    rewritten = compile_module(source, "m.py", "m")
    plain = compile(source, "m.py", "exec", dont_inherit=True)
    g1 = next(c for c in rewritten.co_consts if getattr(c, "co_name", "") == "g")
    g2 = next(c for c in plain.co_consts if getattr(c, "co_name", "") == "g")
    assert marshal.dumps(g1) == marshal.dumps(g2)
    assert rewritten.co_consts[0] == "doc"


def test_module_without_marker_compiles_exactly_like_python():
    source = b"import os\n\ndef f(x):\n    return os.sep + x\n"
    assert marshal.dumps(compile_module(source, "m.py", "m")) == marshal.dumps(
        compile(source, "m.py", "exec", dont_inherit=True)
    )


def test_crlf_and_encoding_cookie_keep_source_text():
    source = "# -*- coding: latin-1 -*-\r\nfrom poet_runtime import poet\r\n@poet\r\ndef f():\r\n    return 'é'\r\n"
    data = source.encode("latin-1")
    code = compile_module(data, "m.py", "m")
    namespace = {}
    calls = []
    import poet_runtime.hook.binding as binding

    saved = binding._core_bind
    binding._core_bind = lambda obj, **identity: calls.append(identity) or obj
    try:
        exec(code, namespace)
    finally:
        binding._core_bind = saved
    assert namespace["f"]() == "é"
    # Newlines are normalised as inspect.getsource (and decode_source) would.
    assert calls[0]["source"] == "@poet\ndef f():\n    return 'é'\n"
    assert calls[0]["lineno"] == 3


def test_literal_arguments_and_non_literals():
    tree = ast.parse("from poet_runtime import poet\n@poet(domain='api_operations', retries=3, timeout=T)\ndef f(): pass\n")
    kwargs, skipped = find_poet_functions(tree)[0].decorator_kwargs()
    assert kwargs == {"domain": "api_operations", "retries": 3}
    assert skipped == ["timeout"]
