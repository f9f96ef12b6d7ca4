"""One module per subcommand; importing this package registers them all on `app.app`."""

from . import synth_cmd, landmarks_cmd, fit_cameras_cmd, train_cmd, invert_cmd, render_cmd, sample_cmd  # noqa: F401
from . import interpolate_cmd, export_mesh_cmd, eval_cmd, bench_cmd, demo_cmd  # noqa: F401
from . import import_cameras_cmd  # noqa: F401
from . import view_cmd  # noqa: F401
