"""Table 1 of the paper: % test error on distorted MNIST R, RTS, P and E (``torchstn reproduce table1``) and its
translated cluttered column TC (``torchstn reproduce tc``).

Every cell is one model on one variant: ``torchstn train table1:RTS/st_cnn_affine`` trains it alone (``--list``
shows the names). On RTS and TC the transformer's output is average-pooled x2 before the classifier, as in the paper
(``model.st_pool``). The paper does not split TC's ST rows by transform; they run with the affine one here.
Our numbers: docs/results.md.
"""

from __future__ import annotations

from torchstn.experiments.specs import ExperimentSpec, grid, register

__all__ = ["TABLE1", "TC"]

TABLE1 = register(
    ExperimentSpec(
        "table1",
        "Table 1 (distorted MNIST)",
        grid(
            ("R", "RTS", "P", "E"),
            {
                ("fcn", None): (2.1, 5.2, 3.1, 3.2),
                ("cnn", None): (1.2, 0.8, 1.5, 1.4),
                ("st_fcn", "affine"): (1.2, 0.8, 1.5, 2.7),
                ("st_fcn", "projective"): (1.3, 0.9, 1.4, 2.6),
                ("st_fcn", "tps"): (1.1, 0.8, 1.4, 2.4),
                ("st_cnn", "affine"): (0.7, 0.5, 0.8, 1.2),
                ("st_cnn", "projective"): (0.8, 0.6, 0.8, 1.3),
                ("st_cnn", "tps"): (0.7, 0.5, 0.8, 1.1),
            },
        ),
        old_names="table1_{variant}_{model}{_transform}",
        overrides={"RTS/st_*": {"model.st_pool": True}},
    )
)

TC = register(
    ExperimentSpec(
        "tc",
        "Table 1, translated cluttered MNIST (TC, 60x60)",
        grid(
            ("TC",),
            {
                ("fcn", None): (13.2,),
                ("cnn", None): (3.5,),
                ("st_fcn", "affine"): (2.0,),
                ("st_cnn", "affine"): (1.7,),
            },
        ),
        old_names="table1_{variant}_{model}{_transform}",
        overrides={"TC/st_*": {"model.st_pool": True}},
    )
)
