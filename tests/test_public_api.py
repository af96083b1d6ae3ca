"""The curated public surface, and import hygiene."""

from __future__ import annotations

import inspect
import subprocess
import sys

import prismcache


def test_all_names_are_exported_and_documented() -> None:
    for name in prismcache.__all__:
        member = getattr(prismcache, name)
        assert member.__doc__, f"{name} has no docstring"
    public = {n for n in dir(prismcache)
              if not n.startswith("_") and not inspect.ismodule(getattr(prismcache, n))}
    assert public - {"annotations"} == set(prismcache.__all__)


def test_importing_prismcache_loads_no_model_and_no_optional_extra() -> None:
    code = (
        "import sys, prismcache, prismcache.cli;"
        "heavy = {'onnxruntime', 'tokenizers', 'redis', 'starlette', 'uvicorn', 'torch',"
        "         'sentence_transformers', 'matplotlib', 'openai', 'langchain_core', 'litellm'};"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_every_module_imports_without_the_optional_extras() -> None:
    """Block the extras' packages and import every prismcache module: each imports, or says
    which extra to install."""
    code = r"""
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'redis', 'starlette', 'uvicorn', 'sentence_transformers',
                                   'matplotlib', 'gptcache', 'usearch', 'openai',
                                   'langchain_core', 'litellm'}:
            raise ImportError(f'blocked {name}')
sys.meta_path.insert(0, Block())
import prismcache
failed = []
for m in pkgutil.walk_packages(prismcache.__path__, 'prismcache.'):
    try:
        importlib.import_module(m.name)
    except ImportError as exc:
        if "pip install 'prismcache[" not in str(exc):
            failed.append((m.name, str(exc)))
print(failed)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
