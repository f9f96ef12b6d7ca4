"""`lolnerf view`: an interactive viewer of a trained model in the browser (viser).

- `state.py`: everything that does not need a browser: which latent is shown (`IdentityState`), the
  browser camera as a lolnerf `Camera`, and the per-browser `RenderState` whose worker thread draws
  low-resolution frames while the camera moves and a sharp one when it stops, from a baked grid where
  one exists for the identity (baked in a background thread) and through the network otherwise.
- `jobs.py`: the slower actions behind the page's buttons (photo inversion, mesh export, screenshots,
  saving the camera as a transforms.json), each a plain function returning what it wrote.
- `server.py`: the viser server, the controls of each connected browser, and the port checks.
"""
