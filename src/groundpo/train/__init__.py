"""The trainer and workflow shared by every DPO-family stage."""
