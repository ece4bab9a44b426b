"""The pipeline in virtual time, without a broker or a database: scenarios and what-if replays.

One floor above the pipeline packages (it composes ``producers/`` and ``streams/``, which may not
import each other) and below ``reconguard/``. ``worker`` runs the streams worker's processors in
memory; ``scenario`` reads a scenario file; ``runner`` plays it against the simulator.
"""
