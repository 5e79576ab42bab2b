"""Running the same ColBERT job under several torch installs and comparing them pair by pair."""
