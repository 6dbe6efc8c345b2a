"""What the CPU path loads: captioning on CPU never imports torch._dynamo (over a second)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import torch
from PIL import Image
from blipcap import Captioner

init = {name: getattr(torch.nn.init, name) for name in ("normal_", "uniform_", "zeros_")}
cap = Captioner(sys.argv[1], backend="torch", device="cpu")
image = Image.new("RGB", (56, 40), "teal")
assert cap.caption([image], max_new_tokens=4)[0].caption
assert all(getattr(torch.nn.init, name) is f for name, f in init.items()), "nn.init not restored"
print("torch._dynamo" in sys.modules)
"""


def test_cpu_captioning_does_not_import_dynamo(tiny_checkpoint):
    p = subprocess.run(
        [sys.executable, "-c", CODE, str(tiny_checkpoint)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"


HELP = """
import sys
from blipcap.cli import COMMANDS, main

heavy = ("torch", "numpy", "PIL", "huggingface_hub", "tokenizers", "fastapi", "onnxruntime")
for args in (["--help"], *([name, "--help"] for name in COMMANDS)):
    try:
        main(args)
    except SystemExit:
        pass
print("imported:", *sorted(m for m in heavy if m in sys.modules))
"""


def test_help_imports_no_heavy_library():
    p = subprocess.run([sys.executable, "-c", HELP], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "imported:"
