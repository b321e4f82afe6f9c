"""The leaderboard of a sweep folder: runs grouped into configurations (grouping), the table and its
files (table), the statistics that say whether a difference is real (statistics), the pictures of a
sweep (pictures), and the Hydra callback that writes it all when a sweep ends (callback)."""
