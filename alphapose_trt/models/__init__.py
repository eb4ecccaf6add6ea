"""Neural network modules and the readers/writers of their real weight files."""
