from django.db import models


class Article(models.Model):
    title = models.CharField(max_length=200)

    class Meta:
        app_label = "testapp"

    def get_absolute_url(self) -> str:
        return f"/articles/{self.pk}/"


class Comment(models.Model):
    article = models.ForeignKey(Article, on_delete=models.CASCADE)
    text = models.CharField(max_length=200)

    class Meta:
        app_label = "testapp"
