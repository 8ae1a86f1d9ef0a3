"""MNIST addition, paper Appendix A.1 (``torchstn reproduce addition``): two RTS-distorted 42x42 digits, one per
channel; the label is their sum (19 classes).

``st_fcn`` has one transformer; ``st_fcn_2x`` two in parallel, each seeing both channels, their outputs
concatenated. ``torchstn train addition:addition/st_fcn_2x_tps`` trains one cell. The transformers' outputs are
average-pooled x2 (``model.st_pool``), as on RTS. The 2xST affine and projective nets train their localisation nets
at a tenth of the learning rate: under Adam at x1 one of their transformers runs away, and under the paper's SGD it
does not, so ``--schedule paper`` may take ``--set optim.loc_lr_mult=1`` (docs/results.md, MNIST addition, has the
runs behind this).
"""

from __future__ import annotations

from torchstn.experiments.specs import ExperimentSpec, grid, register

__all__ = ["ADDITION"]

ADDITION = register(
    ExperimentSpec(
        "addition",
        "MNIST addition (Appendix A.1)",
        grid(
            ("addition",),
            {
                ("fcn", None): (47.7,),
                ("cnn", None): (14.7,),
                ("st_fcn", "affine"): (22.6,),
                ("st_fcn", "projective"): (None,),  # the paper gives its best single ST-FCN (18.5) and the affine one
                ("st_fcn", "tps"): (None,),
                ("st_fcn_2x", "affine"): (9.0,),
                ("st_fcn_2x", "projective"): (5.9,),
                ("st_fcn_2x", "tps"): (5.8,),
            },
        ),
        old_names="addition_{model}{_transform}",
        overrides={
            "addition/st_*": {"model.st_pool": True},
            "addition/st_fcn_2x_affine": {"optim.loc_lr_mult": 0.1},
            "addition/st_fcn_2x_projective": {"optim.loc_lr_mult": 0.1},
        },
    )
)
