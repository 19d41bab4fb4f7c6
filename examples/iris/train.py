"""Train the example classifier and write model.joblib (run once; the artifact is committed).

    python train.py
"""

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X, y = load_iris(return_X_y=True)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=0))
model.fit(X, y)
joblib.dump({"model": model, "classes": [str(c) for c in load_iris().target_names]}, "model.joblib")
print("accuracy on the training set:", model.score(X, y))
