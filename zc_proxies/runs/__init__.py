"""The one experiment engine every multi-task run goes through.

``seeding``      the seed of every random choice, from (run seed, stream, index)
``atomic``       files written whole or not at all
``lock``         one writer per result store
``store``        the result store: settings header, keyed rows, torn-tail repair, lock
``shards``       ``--shard i/N`` and the SLURM / torchrun environment
``device``       the torch device a run asks for, checked up front
``layout``       NCHW or NHWC per space; NHWC brings ``batchnorm`` (exact statistics) and ``pooling``
``memory``       a worker keeps the memory it frees, and its setup objects out of the garbage collector
``runner``       tasks on this process, worker processes (dead workers replaced) or a Dask cluster
``execute``      the loop they share: tasks through the runner, rows into the store as they finish
``evaluation``   an evaluation: architectures -> proxy scores -> correlation tables (``zcbench eval``)
``search``       a resumable candidate search (both BlockSwap searches)
``merge``        joining stores of one experiment, every input checked first (``zcbench merge``)
``interchange``  NAS-Bench-Suite-Zero score files in and out of stores (``zcbench import/export``)
"""
