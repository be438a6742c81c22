"""Training: the Spark training views, Petastorm feeding, the loop and its launcher."""
