"""The API's routes, one module per area; :func:`quickstudy.serve.app.create_app` mounts each under
``/api`` behind the token check."""
