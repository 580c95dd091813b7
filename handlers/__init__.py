"""TorchServe glue, installed as ``qa_serving.handlers`` (see ``[tool.setuptools.package-dir]``).

``qa_handler.py`` is the file ``qa-serving archive`` hands to ``torch-model-archiver --handler``.
"""
