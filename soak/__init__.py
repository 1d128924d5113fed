"""The federation soak (``spl federation soak``) and the benchmarks: load on real daemons, figures out.

The soak, bottom up:

- pure, no I/O: :mod:`~spl.soak.plan` (windows, rates, workload schedule), :mod:`~spl.soak.figures`
  (per-window lag percentiles, queue peaks, errors), :mod:`~spl.soak.report` (CSV, table, JSON),
  :mod:`~spl.soak.plot` (SVG), :mod:`~spl.soak.ledger` (what a run saw), :mod:`~spl.soak.result`
  (the figures of a finished run), :mod:`~spl.soak.config` (what a run does);
- local processes: :mod:`~spl.soak.procfs` (RSS, fds, CPU from /proc), :mod:`~spl.soak.cluster`
  (the throw-away daemons), :mod:`~spl.soak.relay` (a byte-counting TCP relay process),
  :mod:`~spl.soak.interrupts` (SIGTERM and SIGHUP stop a run like Ctrl-C);
- the run: :mod:`~spl.soak.session` (shared context), :mod:`~spl.soak.raw_http` (the emit client),
  :mod:`~spl.soak.pairing`, :mod:`~spl.soak.emitter`, :mod:`~spl.soak.readback`,
  :mod:`~spl.soak.samplers`, :mod:`~spl.soak.workload`, and :mod:`~spl.soak.run` (``run_soak``),
  :mod:`~spl.soak.progress` (stderr), :mod:`~spl.soak.outputs` (``--out``).

The benchmarks, each ``python -m spl.soak.<name>``: :mod:`~spl.soak.emit_bench`,
:mod:`~spl.soak.federation_bench`, :mod:`~spl.soak.capacity`, :mod:`~spl.soak.scale` (every read at 10k–10M records),
:mod:`~spl.soak.emit_overhead` (spl's share of an emit over a bare route), :mod:`~spl.soak.federation_pair_bench`
(handshake, federation-pair catch-up, continuous lag) and :mod:`~spl.soak.filtered_pull` (a namespace pull under the
consent filter at two store sizes); :mod:`~spl.soak.stats` summarises latencies.
Nothing here imports :mod:`spl.cli`: the command is a presenter over this package.
"""
