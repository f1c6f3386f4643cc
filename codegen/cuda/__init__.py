"""The TVM CUDA backend: TE computes and hand schedules per kernel family, built to CUDA C by Apache TVM and to a fat
binary by ``nvcc`` at compile time; the runtime (:mod:`cnncc.runtime.cuda`) replays the launch plan with no TVM.
TVM is imported lazily, only here."""
