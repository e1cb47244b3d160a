"""What each ``method``, ``generator.kind`` and ``solver.arch`` is, declared once: what a
site replays of the finished tasks, which records it trains on, whether DP-SGD can account
for it; whether a generator is trained at the site or fitted by the server to a release;
whether a solver is trained or solved.

The loop, the site and the server ask these traits, never a name: a method is an entry
here, plus its module where it needs code of its own (a regularisation penalty:
``common.methods``; a server side beyond the loop: ``server.methods``); a model is an entry
here plus its class, built by ``common.models.factory`` (the one place that maps names to
classes). The configuration knows the traits (it is the lowest layer and refuses a method
under DP from them); the modules know the mechanics.
"""

from __future__ import annotations

from dataclasses import dataclass

# what a site replays of the finished tasks while it learns a new one
GENERATIVE = "generative"  # samples of the previous generator(s), labelled by the previous solver
EXACT = "exact"  # the finished tasks' stored real records (the upper bound of replay)
PREVIOUS_SOLVER = "previous-solver"  # nothing: the previous global solver anchors a penalty
NOTHING = "nothing"


@dataclass(frozen=True)
class Method:
    name: str
    replay: str  # GENERATIVE | EXACT | PREVIOUS_SOLVER | NOTHING
    all_tasks: bool = False  # trains on the real records of every task so far (joint)
    not_under_dp: str = ""  # why DP-SGD cannot account for it ("": it can)

    @property
    def uses_generator(self) -> bool:
        """Sites train a generator and the server redistributes replay of it."""
        return self.replay == GENERATIVE

    @property
    def needs_payload(self) -> bool:
        """A site needs the server's payload of the finished tasks from task 1 on."""
        return self.replay in (GENERATIVE, PREVIOUS_SOLVER)


_READS_RECORDS = (
    "its penalty reads the site's records (EWC's Fisher information is computed from them "
    "outside DP-SGD, unaccounted; LwF's distillation on them has no measured DP-SGD path); "
    "run it without DP (common/methods)"
)
METHOD_TABLE: dict[str, Method] = {
    m.name: m
    for m in (
        Method("dgr", GENERATIVE),  # Shin et al. 2017
        Method("dgm", GENERATIVE),  # Ostapenko et al. 2019: masks on the generator
        Method("none", NOTHING),  # fine-tuning: the lower bound
        Method(
            "exact",
            EXACT,
            not_under_dp="exact replay feeds stored real records around DP-SGD's clipping "
            "and noise; use 'joint' or 'dgr' under DP",
        ),
        Method("joint", NOTHING, all_tasks=True),  # every task's records: the upper bound
        Method("lwf", PREVIOUS_SOLVER, not_under_dp=_READS_RECORDS),  # Li & Hoiem 2016
        Method("ewc", PREVIOUS_SOLVER, not_under_dp=_READS_RECORDS),  # Kirkpatrick et al. 2017
    )
}
METHODS = tuple(METHOD_TABLE)
# one module each in common/methods: a penalty on the solver, no replay
REGULARISERS = tuple(m.name for m in METHOD_TABLE.values() if m.replay == PREVIOUS_SOLVER)


def method_of(name: str) -> Method:
    """The traits of ``method = name`` (KeyError names the known methods)."""
    try:
        return METHOD_TABLE[name]
    except KeyError:
        raise KeyError(f"method {name!r} is not one of {', '.join(METHODS)}") from None


@dataclass(frozen=True)
class GeneratorKind:
    name: str
    released: bool = False  # a site releases noised statistics (an embedding) and the server
    # fits the generator to their sum: no generator is trained at a site, none travels up


@dataclass(frozen=True)
class SolverArch:
    name: str
    solved: bool = False  # solved in closed form by the server from released statistics
    # (no step at a site; the releases carry its Gram matrix)
    is_critic: bool = False  # the generator's critic is the classifier (AC-GAN)


GENERATOR_TABLE: dict[str, GeneratorKind] = {
    g.name: g
    for g in (
        GeneratorKind("vae"),  # a conditional VAE (DGR's default)
        GeneratorKind("gan"),  # an AC-GAN (DGM's)
        GeneratorKind("embedding", released=True),  # DP-MERF (Harder et al. 2021)
    )
}
SOLVER_TABLE: dict[str, SolverArch] = {
    s.name: s
    for s in (
        SolverArch("mlp"),
        SolverArch("cnn"),
        SolverArch("discriminator", is_critic=True),
        SolverArch("ridge", solved=True),  # on the run's random features
    )
}
GENERATORS = tuple(GENERATOR_TABLE)
SOLVERS = tuple(SOLVER_TABLE)
