"""Dashboard URLs (the views arrive with the dashboard issue)."""

urlpatterns: list = []
