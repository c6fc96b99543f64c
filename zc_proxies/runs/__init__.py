"""The one experiment engine every multi-task run goes through.

``seeding``   the seed of every random choice, from (run seed, stream, index)
``atomic``    files written whole or not at all
``lock``      one writer per result store
``store``     the result store: settings header, keyed rows, torn-tail repair, lock
``shards``    ``--shard i/N`` and the SLURM / torchrun environment
``runner``    tasks on this process, worker processes or a Dask cluster
"""
