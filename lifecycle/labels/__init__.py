"""Labels: the open label set, label requests, label files, intent discovery."""
