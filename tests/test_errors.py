"""Library errors name parameters; the commands show them as command-line flags (app.flag_for)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lolnerf_cli import commands  # noqa: F401 - registers the subcommands
from lolnerf_cli.app import app, flag_for
from lolnerf_cli.errors import InputError, ParamError
from lolnerf_cli.latent_pick import check_latent_choice
from lolnerf_cli.synth import synthesize


def test_param_error_names_parameters_and_maps_to_flags():
    err = ParamError("index/latent_file", "give exactly one of {index} I or {latent_file} FILE (not {x y})")
    assert isinstance(err, InputError) and err.param == "index/latent_file"
    assert str(err) == "index/latent_file: give exactly one of index I or latent_file FILE (not {x y})."
    cli = err.as_flags(flag_for)
    assert str(cli) == "--index/--latent: give exactly one of --index I or --latent FILE (not {x y})."
    assert flag_for("invert_steps") == "--invert-steps" and flag_for("flag_fraction") == "--flag-threshold"


def test_library_raises_parameter_names(tmp_path):
    with pytest.raises(ParamError) as exc:
        synthesize(tmp_path / "d", n=0, resolution=16)
    assert str(exc.value) == "n: must be an integer of at least 1, got 0."
    with pytest.raises(ParamError, match="^index/latent_file: "):
        check_latent_choice(None, None)


def test_commands_show_flags(tmp_path):
    # the library's flag_fraction is the command's --flag-threshold; checked before any file is read
    res = CliRunner().invoke(app, ["fit-cameras", str(tmp_path), "--flag-threshold", "-1"])
    assert res.exit_code == 2, res.output
    assert "--flag-threshold: must be a positive fraction, got -1.0." in res.output
    assert "flag_fraction" not in res.output
