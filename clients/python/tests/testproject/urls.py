from django.urls import path

from .testapp import views

urlpatterns = [
    path("articles/", views.ArticleList.as_view(), name="article-list"),
    path("articles/<int:pk>/", views.article_detail, name="article-detail"),
    path("articles/<int:pk>/comments/", views.article_comments, name="article-comments"),
    path("theme/", views.theme, name="theme"),
    path("lang/", views.lang, name="lang"),
    path("whoami/", views.whoami, name="whoami"),
    path("whoami-shared/", views.whoami_shared, name="whoami-shared"),
    path("sets-cookie/", views.sets_cookie, name="sets-cookie"),
    path("sets-cookie-ok/", views.sets_cookie_ok, name="sets-cookie-ok"),
    path("private/", views.private, name="private"),
    path("nostore/", views.nostore, name="nostore"),
    path("csrf/", views.csrf_form, name="csrf"),
    path("missing/", views.missing, name="missing"),
    path("form/", views.form_view, name="form"),
    path("dynamic-tags/", views.dynamic_tags, name="dynamic-tags"),
    path("method-decorated/", views.MethodDecorated.as_view(), name="method-decorated"),
    path("wrapped-as-view/", views.wrapped_as_view, name="wrapped-as-view"),
    path("raw/<path:rest>", views.raw, name="raw"),
    path("default-timeout/", views.default_timeout, name="default-timeout"),
    path("gone/", views.gone, name="gone"),
    path("async/", views.async_view, name="async"),
    path("messages/", views.with_messages, name="messages"),
    path("messages/add/", views.add_message, name="add-message"),
    path("async-class/", views.async_class_view, name="async-class"),
]
