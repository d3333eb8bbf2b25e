"""The ``yolo-plugins`` console commands (``cli.py`` dispatches): convert, import-weights, slim, the main job."""
