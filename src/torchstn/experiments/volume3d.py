"""The 3D spatial transformer, paper Appendix A.3 (``torchstn reproduce 3d``): an MNIST digit extruded 14 voxels
deep, rotated up to 30 degrees about each axis and placed in a 60^3 volume.

``st3d_cnn`` is a 3D affine transformer on the volume whose output's depth is averaged into a 2D image for a 2D CNN;
``proj_cnn``, the baseline, projects the volume along depth without a transformer. The paper gives no error for
either. A batch is 32 volumes (a 60^3 volume is 216k voxels), to keep a CPU step short. Our numbers:
docs/results.md.
"""

from __future__ import annotations

from torchstn.experiments.specs import ExperimentSpec, grid, register

__all__ = ["VOLUME3D"]

VOLUME3D = register(
    ExperimentSpec(
        "3d",
        "3D spatial transformer (Appendix A.3)",
        grid(
            ("3D",),
            {
                ("proj_cnn", None): (None,),
                ("st3d_cnn", "affine3d"): (None,),
            },
        ),
        old_names="3d_{model}",
        base={"optim.schedule": "cpu", "optim.batch_size": 32},
    )
)
