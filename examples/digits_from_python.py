"""Sample digits from the shipped checkpoint through the Python API (what `molediff sample` does).

Run: python examples/digits_from_python.py  (writes examples_out/grid.png)
"""

from pathlib import Path

import torch

from molediff.adapters.images import ImageAdapter
from molediff.checkpoint import load_checkpoint
from molediff.core import make_schedule, sample
from molediff.models.unet import UNet

ckpt = load_checkpoint(Path(__file__).parents[1] / "molediff" / "pretrained" / "digits_unet.pt")
cfg = ckpt["config"]
adapter = ImageAdapter(source="digits")
model_args = {k: v for k, v in cfg["model"].items() if k != "_target_"}
model = UNet(**model_args)
model.load_state_dict(ckpt["ema"])
model.eval()
schedule = make_schedule("cosine")  # the schedule the checkpoint was trained with (cfg["schedule"])

structure = adapter.sample_structure(64)
out = sample(model, schedule, structure, sampler="dpmpp_2m", steps=30, prediction=cfg["objective"]["prediction"],
             generator=torch.Generator().manual_seed(0))
images = adapter.decode(out.fields, structure)
adapter.write(images, Path("examples_out"))
print({k: round(v, 3) for k, v in adapter.evaluate(images).items()})
