"""Example applications mounting flask-publipostage."""
