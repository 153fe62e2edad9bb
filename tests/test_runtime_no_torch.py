"""The runtime imports and generates in a process where torch, transformers and aapp_export are blocked."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_runtime_generates_without_torch(exports):
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split('.')[0] in ('torch', 'transformers', 'aapp_export'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        from aapp_runtime import Session
        s = Session({str(exports['gemma3'])!r}, provider='cpu')
        r = s.generate('Explain photosynthesis', max_new_tokens=8)
        print(json.dumps({{'tokens': r.tokens, 'torch': 'torch' in sys.modules,
                           'transformers': 'transformers' in sys.modules}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["torch"] is False and out["transformers"] is False
    assert 1 <= len(out["tokens"]) <= 8
