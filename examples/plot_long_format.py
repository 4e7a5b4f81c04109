"""
================================================
Tasks in a pandas DataFrame: long format, groups
================================================

Real task collections often come as one table: a row per measurement, a column saying
which task (site, device, customer…) it belongs to. :class:`~msr_sklearn.MetaSymmetryLearner`
takes that directly — ``fit(X, y, groups=task_ids)`` — and tasks may have different
numbers of rows.

Here every task is a *sensor array* of 6 interchangeable sensors: each output is
``a * x_j + b * mean(x)`` with the array's own ``a`` and ``b``. The arrays share a
symmetry — permuting the sensors permutes the outputs — which MSR learns.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import sklearn
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, cross_validate

from msr_sklearn import MetaSymmetryLearner
from msr_sklearn.datasets import make_permutation_tasks

torch.set_num_threads(1)

# %%
# One long table
# --------------
# 400 arrays with 6 to 20 measurements each, in one DataFrame.
X3, y3 = make_permutation_tasks(n_tasks=400, n_samples=20, n_features=6, noise=0.1,
                                random_state=0)
rng = np.random.default_rng(0)
frames = []
for site, (X_site, y_site) in enumerate(zip(X3, y3)):
    n_rows = rng.integers(6, 21)
    frame = pd.DataFrame(X_site[:n_rows], columns=[f"x{j}" for j in range(6)])
    frame[[f"y{j}" for j in range(6)]] = y_site[:n_rows]
    frame.insert(0, "site", f"site-{site:03d}")
    frames.append(frame)
df = pd.concat(frames, ignore_index=True)
features = [f"x{j}" for j in range(6)]
targets = [f"y{j}" for j in range(6)]
print(df.shape)
print(df.head())

train = df[df["site"] < "site-300"]
test = df[df["site"] >= "site-300"]

# %%
# Fit on the table
# ----------------
# ``groups`` names the task of every row. Column names are kept, as scikit-learn
# estimators do, and checked again at ``score`` time.
learner = MetaSymmetryLearner(n_filters=2, bias=False, n_support=2, inner_steps=5,
                              meta_lr=1e-2, n_meta_steps=1000, random_state=0)
learner.fit(train[features], train[targets], groups=train["site"])
print("feature names:", list(learner.feature_names_in_))
score = learner.score(test[features], test[targets], groups=test["site"])
print(f"R² on 100 new sites: {score:.3f}")

# %%
# Cross-validation needs metadata routing
# ---------------------------------------
# :class:`~sklearn.model_selection.GroupKFold` keeps every site whole in one fold, so it
# needs the site ids — and so do the learner's ``fit`` and ``score``. scikit-learn
# passes such *metadata* to an estimator only when routing is enabled and the estimator
# requests it:
with sklearn.config_context(enable_metadata_routing=True):
    routed = (MetaSymmetryLearner(**learner.get_params())
              .set_fit_request(groups=True)
              .set_score_request(groups=True))
    cv = cross_validate(routed, train[features], train[targets], cv=GroupKFold(3),
                        params={"groups": train["site"]})
print("R² per fold:", np.round(cv["test_score"], 3))

# %%
# Without routing, ``cross_validate(..., groups=...)`` would give the ids to the splitter
# only, and ``fit`` would receive a plain table with no task structure (and refuse it).
#
# Per-task results
# ----------------
# ``evaluate`` returns one row per task (with a seeded random support split):
per_task = learner.evaluate(test[features], test[targets], groups=test["site"])
print(per_task.head())

# %%
# The per-task estimator does the same for one site at a time. We adapt it on the first
# 2 rows of every new site and compare with a ridge regression fitted on the same 2 rows
# — what one could do without the other sites.
r2 = {"MSR (learned U)": [], "ridge on the site alone": []}
examples = []
for site, rows in test.groupby("site"):
    X_site, y_site = rows[features], rows[targets]
    reg = learner.make_estimator().fit(X_site.iloc[:2], y_site.iloc[:2])
    ridge = Ridge(alpha=1.0).fit(X_site.iloc[:2], y_site.iloc[:2])
    X_query, y_query = X_site.iloc[2:], y_site.iloc[2:]
    r2["MSR (learned U)"].append(r2_score(y_query, reg.predict(X_query)))
    r2["ridge on the site alone"].append(r2_score(y_query, ridge.predict(X_query)))
    if len(examples) < 4:
        examples.append((site, y_query.to_numpy(), reg.predict(X_query)))

fig, axes = plt.subplots(1, 2, figsize=(11, 4))
bins = np.linspace(-1, 1, 21)
for name, values in r2.items():
    axes[0].hist(np.clip(values, -1, 1), bins=bins, alpha=0.6,
                 label=f"{name}: median {np.median(values):.2f}")
axes[0].set_xlabel("query R² of a new site (clipped at -1)")
axes[0].set_ylabel("sites")
axes[0].set_title("100 new sites, 2 rows each to learn from")
axes[0].legend(fontsize=9)

for k, (site, truth, pred) in enumerate(examples):
    axes[1].scatter(truth.ravel(), pred.ravel(), s=10, color=f"C{k}", label=site)
lim = np.abs(axes[1].get_xlim()).max()
axes[1].plot([-lim, lim], [-lim, lim], color="0.5", lw=1)
axes[1].set_xlabel("true output")
axes[1].set_ylabel("MSR prediction")
axes[1].set_title("query rows of four new sites")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()
