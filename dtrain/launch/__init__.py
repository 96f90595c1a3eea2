"""Starting the processes of a run: local ranks, Slurm jobs, Ray clusters."""
