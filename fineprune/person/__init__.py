"""The session layer: what the Studio's views use to turn a person's recordings into a personal
model. No UI here (the Studio wraps it in ``studio/``); everything lives in memory.

- ``recordings``: clips, labels, the adaptation/check split, ingesting files (via the domains' decoders)
- ``uploads``: uploaded files and zips, opened in memory with limits
- ``demo``: the shipped demo individuals
- ``run``: a personalization run and the Explore page's follow-ups (sparsities, criteria, baselines)
- ``jobs``: background jobs, leases, progress scaling
- ``options``: the choices a view offers (criteria, recalibration depth, a card's defaults)
- ``project``: a whole session saved as one file (zip of JSON + ``.npy``) and opened again
"""
