"""``blipcap distill``: a smaller BLIP captioner trained to imitate a bigger one.

The teacher captions the user's unlabeled images; a student with fewer layers
(and optionally a narrower vision encoder), initialized from the teacher's own
layers, learns those captions and the teacher's token distributions. The result
is an ordinary Hugging Face BLIP checkpoint. See docs/distill.md.
"""

from .student import StudentShape, init_student, pick_layers, student_config
from .train import DistillOptions, DistillReport, distill, write_checkpoint

__all__ = [
    "DistillOptions",
    "DistillReport",
    "StudentShape",
    "distill",
    "init_student",
    "pick_layers",
    "student_config",
    "write_checkpoint",
]
