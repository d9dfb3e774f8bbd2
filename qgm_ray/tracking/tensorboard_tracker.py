"""The TensorBoard tracker: event files in <run dir>/tensorboard/."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Optional

from qgm_ray.tracking.values import ENDS, flat_params, row_values


TENSORBOARD_DIR = "tensorboard"     # under the run directory


class _TensorBoard:
    """Event files written with tensorboardX's protocol buffers and record writer, in the
    caller's thread: it ships with Ray Tune (a dependency already), where torch.utils.tensorboard
    needs the whole tensorboard package just to write. Not its SummaryWriter: that one writes
    from a background thread, where a full disk would go unseen (and its flush would wait on a
    dead thread), and its hparams go to a directory of their own. Each value is a float64 tensor
    of the scalars plugin, so TensorBoard holds exactly the number metrics.csv holds (a classic
    scalar summary is float32)."""

    name = "tensorboard"

    def __init__(self, cfg, run_dir: Path, columns: list, resume_round: Optional[int], ids: dict):
        from tensorboardX.record_writer import RecordWriter
        self.columns = columns
        self.dir = run_dir / TENSORBOARD_DIR
        self.dir.mkdir(exist_ok=True)
        # A name per start, ordered by time (TensorBoard reads a directory's files in name order).
        self.path = self.dir / f"events.out.tfevents.{time.time_ns()}.{socket.gethostname()}.{os.getpid()}"
        self.writer = RecordWriter(str(self.path))
        self._event(file_version="brain.Event:2")
        if resume_round is None:
            self._session_start(0)   # the first start: later ones are restarts, which purge
            self._hparams(cfg)
        else:
            self._session_start(resume_round + 1)
        self.writer.flush()

    def ids(self) -> Optional[dict]:
        return None

    def log(self, row: dict) -> None:
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboardX.proto.tensor_pb2 import TensorProto
        from tensorboardX.proto.types_pb2 import DT_DOUBLE
        values = row_values(row, self.columns)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="scalars"))
        summary = Summary(value=[Summary.Value(tag=c, metadata=meta, tensor=TensorProto(dtype=DT_DOUBLE, double_val=[v]))
                                 for c, v in values.items() if c != "round"])
        self._event(step=int(values["round"]), summary=summary)
        self.writer.flush()

    def rewind(self, round_: int) -> None:
        self._session_start(round_ + 1)
        self.writer.flush()

    def close(self, status: str) -> None:
        self._hparams_end(status)
        self.writer.flush()
        self.writer.close()

    def abandon(self) -> None:
        self.writer.close()

    def _event(self, step: int = 0, **fields) -> None:
        from tensorboardX.proto.event_pb2 import Event
        self.writer.write(Event(wall_time=time.time(), step=step, **fields).SerializeToString())

    def _session_start(self, step: int) -> None:
        """TensorBoard's session restart: at `step` > 0 it drops the values of steps >= `step`."""
        from tensorboardX.proto.event_pb2 import SessionLog
        self._event(step=step, session_log=SessionLog(status=SessionLog.START))

    def _hparams(self, cfg) -> None:
        """The resolved config as the hparams plugin's session, the columns as its metrics."""
        from tensorboardX.summary import hparams
        experiment, session_start, _ = hparams(flat_params(cfg.to_dict()), {c: 0.0 for c in self.columns
                                                                            if c != "round"})
        self._event(summary=experiment)
        self._event(summary=session_start)

    def _hparams_end(self, status: str) -> None:
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata
        code = ENDS.get(status, ENDS["failed"])[0]
        content = HParamsPluginData(session_end_info=SessionEndInfo(status=Status.Value(code), end_time_secs=time.time()),
                                    version=0)
        meta = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name="hparams",
                                                                      content=content.SerializeToString()))
        self._event(summary=Summary(value=[Summary.Value(tag="_hparams_/session_end_info", metadata=meta)]))
